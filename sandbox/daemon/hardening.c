#include "daemon/hardening.h"

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon/manager.h"
#include "runtime/confine.h"
#include "runtime/landlock.h"
#include "util/cleanup.h"

static int hardening_write(const char *path, const char *text)
{
	_cleanup_close_ int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text))
		return -errno;
	return 0;
}

/* Can we make a user namespace and map one of our unprivileged uids into it? A child unshares and
 * waits; we write its maps the way spawn does. */
static void hardening_probe_userns(struct manager *m)
{
	int ready[2], done[2];
	if (pipe2(ready, O_CLOEXEC) < 0 || pipe2(done, O_CLOEXEC) < 0) {
		snprintf(m->userns_detail, sizeof(m->userns_detail), "probe failed: pipe: %s", strerror(errno));
		return;
	}
	pid_t pid = fork();
	if (pid == 0) {
		close(ready[0]);
		close(done[1]); /* or the read below never sees the parent's close */
		char c = unshare(CLONE_NEWUSER) == 0 ? 'y' : 'n';
		(void)!write(ready[1], &c, 1);
		(void)!read(done[0], &c, 1);
		_exit(0);
	}
	close(ready[1]);
	close(done[0]);
	char c = 'n', path[64], map[64];
	int r = pid < 0 ? -errno : read(ready[0], &c, 1) == 1 && c == 'y' ? 0 : -EPERM;
	if (r == 0) {
		snprintf(map, sizeof(map), "0 %u 1\n", (unsigned)m->cfg.uid_base);
		snprintf(path, sizeof(path), "/proc/%d/uid_map", (int)pid);
		r = hardening_write(path, map);
		snprintf(path, sizeof(path), "/proc/%d/setgroups", (int)pid);
		if (r == 0)
			r = hardening_write(path, "deny");
		snprintf(path, sizeof(path), "/proc/%d/gid_map", (int)pid);
		if (r == 0)
			r = hardening_write(path, map);
	}
	close(done[1]);
	close(ready[0]);
	if (pid > 0)
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
	m->userns_ok = r == 0;
	if (r == 0)
		snprintf(m->userns_detail, sizeof(m->userns_detail),
			 "sandbox root = an unprivileged host uid range (%u uids per sandbox from %u); setgroups denied",
			 UID_RANGE, (unsigned)m->cfg.uid_base);
	else
		snprintf(m->userns_detail, sizeof(m->userns_detail), "cannot create a mapped user namespace: %s",
			 strerror(-r));
}

/* BPF LSM: probed and reported, never relied on. A two-instruction "allow" program for file_open
 * is loaded and, if that works, attached and detached again at once. */
static void hardening_probe_bpf_lsm(struct manager *m)
{
	char *d = m->bpf_lsm_detail;
	size_t n = sizeof(m->bpf_lsm_detail);
	struct btf *btf = btf__load_vmlinux_btf();
	if (!btf) {
		snprintf(d, n, "unavailable: no kernel BTF (%s)", strerror(errno));
		return;
	}
	int id = btf__find_by_name_kind(btf, "bpf_lsm_file_open", BTF_KIND_FUNC);
	btf__free(btf);
	if (id < 0) {
		snprintf(d, n, "unavailable: kernel built without CONFIG_BPF_LSM");
		return;
	}
	const struct bpf_insn insns[] = {
		{.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = 0},
		{.code = BPF_JMP | BPF_EXIT},
	};
	LIBBPF_OPTS(bpf_prog_load_opts, opts, .expected_attach_type = BPF_LSM_MAC, .attach_btf_id = (__u32)id);
	_cleanup_close_ int prog = bpf_prog_load(BPF_PROG_TYPE_LSM, "corral_probe", "GPL", insns, 2, &opts);
	if (prog < 0) {
		snprintf(d, n, "unavailable: the kernel refuses to load LSM programs (%s); not used", strerror(errno));
		return;
	}
	int link = bpf_link_create(prog, 0, BPF_LSM_MAC, NULL);
	if (link < 0) {
		snprintf(d, n, "unavailable: LSM programs load but cannot attach (%s: bpf not in the active LSM list?); "
			 "not used", strerror(errno));
		return;
	}
	close(link);
	snprintf(d, n, "available but not used: corral does not build on BPF LSM");
}

int hardening_init(struct manager *m, struct err *e)
{
	int r = confine_new(!m->cfg.no_confinement, &m->confine, e);
	if (r < 0)
		return err_prefix(e, "confinement");
	hardening_probe_userns(m);
	hardening_probe_bpf_lsm(m);
	if (m->cfg.no_confinement)
		log_warn("--no-confinement: sandboxes get namespaces only (no capabilities dropped, no seccomp, no "
			 "Landlock, no /proc masks). For benchmarks only; never run untrusted code like this");
	return 0;
}

static bool hardening_cgroup_limits(const struct manager *m)
{
	const struct cgroup_host *h = &m->cgroups;
	return h->mode != CGROUP_MODE_NONE && (h->v2_memory || h->v1_memory[0]) && (h->v2_pids || h->v1_pids[0]);
}

int hardening_require(const struct manager *m, struct err *e)
{
	if (!m->cfg.require_hardening)
		return 0;
	char missing[ERR_MSG_MAX] = "";
	size_t off = 0;
#define MISSING(...) off += (size_t)snprintf(missing + off, off < sizeof(missing) ? sizeof(missing) - off : 0, __VA_ARGS__)
	if (m->cfg.no_confinement)
		MISSING("; seccomp (--no-confinement given)");
	else if (!m->confine || !m->confine->seccomp.n_progs)
		MISSING("; seccomp (no filter built)");
	if (!m->userns_ok)
		MISSING("; user namespaces (%s)", m->userns_detail);
	if (!hardening_cgroup_limits(m))
		MISSING("; cgroup limits (no memory and pids controllers usable in %s mode)", cgroup_mode_name(m->cgroups.mode));
	if (!m->devpolicy_active)
		MISSING("; device program (%s)", m->devpolicy_detail);
#undef MISSING
	if (!missing[0])
		return 0;
	return err_setx(e, EPERM, "--require-hardening: cannot apply%s", missing + 1);
}

static void hardening_add(struct hardening_layer *out, size_t max, size_t *n, const char *name, bool active,
			  const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static void hardening_add(struct hardening_layer *out, size_t max, size_t *n, const char *name, bool active,
			  const char *fmt, ...)
{
	if (*n >= max)
		return;
	struct hardening_layer *l = &out[(*n)++];
	l->name = name;
	l->active = active;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(l->detail, sizeof(l->detail), fmt, ap);
	va_end(ap);
}

size_t hardening_layers(const struct manager *m, struct hardening_layer *out, size_t max)
{
	const struct confine *c = m->confine;
	bool on = c && c->enabled;
	const char *off = "off: --no-confinement (benchmarks only)";
	size_t n = 0;
	char buf[256];
	hardening_add(out, max, &n, "user_namespace", m->userns_ok, "%s", m->userns_detail);
	hardening_add(out, max, &n, "pid_namespace", true, "corral-init is PID 1");
	hardening_add(out, max, &n, "mount_namespace", true, "overlayfs root entered with pivot_root; host tree detached");
	hardening_add(out, max, &n, "network_namespace", true, "own network namespace per sandbox");
	hardening_add(out, max, &n, "uts_ipc_namespaces", true, "hostname = sandbox id; private System V IPC");
	hardening_add(out, max, &n, "cgroups", hardening_cgroup_limits(m), "per-sandbox cgroups (%s) under %s",
		      cgroup_mode_name(m->cgroups.mode), m->cfg.cgroup_parent);
	if (on) {
		caps_policy_describe(&c->caps, buf, sizeof(buf));
		hardening_add(out, max, &n, "capabilities", true, "bounding = permitted = effective: %s; "
			      "inheritable and ambient empty; securebits locked", buf);
		hardening_add(out, max, &n, "seccomp", true, "allow-list of %zu syscalls (default EPERM, clone3 ENOSYS, "
			      "native x86-64 only) + TIOCSTI/TIOCLINUX filter", c->seccomp.n_allowed);
		hardening_add(out, max, &n, "no_new_privs", true, "set before exec of init; setuid and file "
			      "capabilities grant nothing");
		landlock_describe(c->landlock_abi, buf, sizeof(buf));
		hardening_add(out, max, &n, "landlock", c->landlock_abi > 0, "%s", buf);
		hardening_add(out, max, &n, "masked_paths", true, "/proc kcore, keys, kallsyms, timer_list, "
			      "latency_stats, sched_debug, acpi, scsi, asound masked; /proc sys, bus, fs, irq, "
			      "sysrq-trigger read-only; root nosuid,nodev; RLIMIT_CORE 0, RLIMIT_NOFILE %llu/%llu",
			      (unsigned long long)c->nofile_soft, (unsigned long long)c->nofile_hard);
	} else {
		hardening_add(out, max, &n, "capabilities", false, "%s", off);
		hardening_add(out, max, &n, "seccomp", false, "%s", off);
		hardening_add(out, max, &n, "no_new_privs", false, "%s", off);
		hardening_add(out, max, &n, "landlock", false, "%s", off);
		hardening_add(out, max, &n, "masked_paths", false, "%s", off);
	}
	hardening_add(out, max, &n, "bpf_device_policy", m->devpolicy_active, "%s", m->devpolicy_detail);
	hardening_add(out, max, &n, "bpf_lsm", false, "%s", m->bpf_lsm_detail);
	return n;
}

void hardening_free(struct manager *m)
{
	confine_free(m->confine);
	m->confine = NULL;
}
