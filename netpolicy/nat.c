#include "netpolicy/nat.h"

#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <nftables/libnftables.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "util/cleanup.h"

int nat_default_uplink(char *buf, size_t size, struct err *e)
{
	_cleanup_fclose_ FILE *f = fopen("/proc/net/route", "re");
	if (!f)
		return err_set(e, errno, "open /proc/net/route");
	char line[256], ifname[IFNAMSIZ + 1];
	unsigned dst, mask;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%16s %x %*x %*x %*d %*d %*d %x", ifname, &dst, &mask) == 3 && dst == 0 && mask == 0) {
			snprintf(buf, size, "%s", ifname);
			return 0;
		}
	}
	return err_setx(e, ENOENT, "no default route: pass --net-uplink");
}

static bool name_ok(const char *s, size_t max)
{
	size_t n = strlen(s);
	if (n == 0 || n > max)
		return false;
	for (const char *p = s; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_' ||
		      *p == '-' || *p == '.' || *p == '/'))
			return false;
	return true;
}

static int nft_run(const char *cmd, struct err *e)
{
	struct nft_ctx *nft = nft_ctx_new(NFT_CTX_DEFAULT);
	if (!nft)
		return err_set(e, ENOMEM, "nftables context");
	nft_ctx_buffer_output(nft);
	nft_ctx_buffer_error(nft);
	int r = nft_run_cmd_from_buffer(nft, cmd);
	if (r != 0) {
		const char *msg = nft_ctx_get_error_buffer(nft);
		char one[256];
		snprintf(one, sizeof(one), "%s", msg ? msg : "");
		one[strcspn(one, "\n")] = '\0';
		r = err_setx(e, strstr(one, "No such file") ? ENOENT : EIO, "nftables: %s", one);
	}
	nft_ctx_free(nft);
	return r;
}

int nat_setup(const char *table, const char *subnet, const char *uplink, struct err *e)
{
	/* Inputs reach an nftables script: only plain names and a CIDR pass. */
	if (!name_ok(table, 64) || !name_ok(subnet, 18) || !name_ok(uplink, IFNAMSIZ - 1))
		return err_setx(e, EINVAL, "nftables: bad table, subnet or uplink name");
	char cmd[1024];
	snprintf(cmd, sizeof(cmd),
		 "add table ip %s\n"
		 "delete table ip %s\n"
		 "table ip %s {\n"
		 "  chain postrouting {\n"
		 "    type nat hook postrouting priority srcnat; policy accept;\n"
		 "    ip saddr %s oifname \"%s\" masquerade\n"
		 "  }\n"
		 "}\n",
		 table, table, table, subnet, uplink);
	return nft_run(cmd, e);
}

int nat_teardown(const char *table, struct err *e)
{
	if (!name_ok(table, 64))
		return err_setx(e, EINVAL, "nftables: bad table name");
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "delete table ip %s\n", table);
	return nft_run(cmd, e);
}

int nat_enable_forwarding(bool *ret_changed, struct err *e)
{
	_cleanup_close_ int fd = open("/proc/sys/net/ipv4/ip_forward", O_RDWR | O_CLOEXEC);
	char was = '0';
	if (fd < 0 || pread(fd, &was, 1, 0) != 1)
		return err_set(e, errno, "read net.ipv4.ip_forward");
	*ret_changed = was == '0';
	if (*ret_changed && pwrite(fd, "1\n", 2, 0) != 2)
		return err_set(e, errno, "enable net.ipv4.ip_forward");
	return 0;
}

void nat_restore_forwarding(void)
{
	_cleanup_close_ int fd = open("/proc/sys/net/ipv4/ip_forward", O_WRONLY | O_CLOEXEC);
	if (fd >= 0)
		(void)!write(fd, "0\n", 2);
}
