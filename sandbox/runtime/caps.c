/* Capabilities inside a sandbox. They are capabilities over the sandbox's own user namespace, so
 * even the kept ones act only on what the sandbox owns; the dropped ones are those whose checks
 * reach kernel-wide state or attack surface from inside a user namespace (SYS_ADMIN: mounts and
 * much else; NET_ADMIN/NET_RAW: netfilter, raw sockets, module autoload by interface type;
 * SYS_PTRACE: init is non-dumpable, so without it nothing can attach to init; MKNOD, BPF, PERFMON,
 * SYS_TIME, SYS_MODULE, …). */
#include "runtime/caps.h"

#include <errno.h>
#include <linux/capability.h>
#include <linux/prctl.h>
#include <linux/securebits.h>
#include <stdio.h>
#include <string.h>
#include <sys/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "util/cleanup.h"

#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT 47
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#endif

/* Docker's default set: enough to install packages (chown, setuid/setgid), kill one's own
 * processes and bind low ports. */
static const char *const caps_default[] = {
	"cap_chown", "cap_dac_override", "cap_fowner", "cap_fsetid", "cap_kill", "cap_setgid",
	"cap_setuid", "cap_setpcap", "cap_net_bind_service", "cap_sys_chroot", "cap_setfcap", "cap_audit_write",
};

/* Keep root semantics for uid 0 (an exec gets the kept set) and the usual setuid fixups, but lock
 * them so that nothing inside can change them, and refuse ambient capabilities for good. */
#define CAPS_SECUREBITS                                                                             \
	(SECBIT_KEEP_CAPS_LOCKED | SECBIT_NO_SETUID_FIXUP_LOCKED | SECBIT_NOROOT_LOCKED |             \
	 SECBIT_NO_CAP_AMBIENT_RAISE | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED)

int caps_policy_init(struct caps_policy *ret, struct err *e)
{
	struct caps_policy p = {0};
	_cleanup_fclose_ FILE *f = fopen("/proc/sys/kernel/cap_last_cap", "re");
	if (!f || fscanf(f, "%u", &p.last_cap) != 1 || p.last_cap > 63)
		return err_setx(e, EIO, "capabilities: cannot read /proc/sys/kernel/cap_last_cap");
	for (size_t i = 0; i < ARRAY_SIZE(caps_default); i++) {
		cap_value_t v;
		if (cap_from_name(caps_default[i], &v) < 0 || v < 0 || (unsigned)v > p.last_cap)
			return err_setx(e, EINVAL, "capabilities: %s unknown to this kernel", caps_default[i]);
		p.keep |= 1ULL << v;
	}
	*ret = p;
	return 0;
}

int caps_policy_apply(const struct caps_policy *p, struct err *e)
{
	/* Securebits and the bounding set need CAP_SETPCAP: before capset. */
	if (prctl(PR_SET_SECUREBITS, CAPS_SECUREBITS, 0, 0, 0) < 0)
		return err_setx(e, errno, "lock securebits");
	for (unsigned c = 0; c <= p->last_cap; c++)
		if (!(p->keep & (1ULL << c)) && prctl(PR_CAPBSET_DROP, c, 0, 0, 0) < 0)
			return err_setx(e, errno, "drop capability %u from the bounding set", c);
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0)
		return err_setx(e, errno, "clear ambient capabilities");
	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
	struct __user_cap_data_struct data[2] = {0};
	for (int i = 0; i < 2; i++)
		data[i].effective = data[i].permitted = (uint32_t)(p->keep >> (32 * i)); /* inheritable: none */
	if (syscall(SYS_capset, &hdr, data) < 0)
		return err_setx(e, errno, "set capabilities");
	return 0;
}

void caps_policy_describe(const struct caps_policy *p, char *buf, size_t size)
{
	size_t off = 0;
	buf[0] = '\0';
	for (unsigned c = 0; c <= p->last_cap && off < size; c++) {
		if (!(p->keep & (1ULL << c)))
			continue;
		char *name = cap_to_name((cap_value_t)c);
		const char *shown = !name ? "?" : strncmp(name, "cap_", 4) ? name : name + 4;
		int n = snprintf(buf + off, size - off, "%s%s", off ? "," : "", shown);
		cap_free(name);
		if (n < 0)
			break;
		off += (size_t)n;
	}
}
