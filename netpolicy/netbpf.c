#include <linux/types.h>

#include "netpolicy/netbpf.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "net_policy.skel.h"
#include "util/cleanup.h"

#define NETBPF_QUERY_MAX 64

struct netbpf {
	struct net_policy_bpf *skel;
};

static struct bpf_map *skel_map(struct net_policy_bpf *s, enum netbpf_map m)
{
	switch (m) {
	case NETBPF_ALLOW4: return s->maps.allow4;
	case NETBPF_ALLOW6: return s->maps.allow6;
	case NETBPF_DENY4: return s->maps.deny4;
	case NETBPF_DENY6: return s->maps.deny6;
	case NETBPF_DNS4: return s->maps.dns4;
	case NETBPF_SLOTS: return s->maps.slots;
	case NETBPF_CG2SLOT: return s->maps.cg2slot;
	case NETBPF_IF2SLOT: return s->maps.if2slot;
	case NETBPF_COUNTERS: return s->maps.counters;
	default: return NULL;
	}
}

int netbpf_map_fd(const struct netbpf *b, enum netbpf_map m) { return bpf_map__fd(skel_map(b->skel, m)); }

/* The maps of our connect4 program attached to cgroup_fd by an earlier daemon, handed to the
 * skeleton before load. Returns 1 when every map was found. */
static int take_over_maps(struct net_policy_bpf *s, int cgroup_fd)
{
	__u32 ids[NETBPF_QUERY_MAX], cnt = NETBPF_QUERY_MAX, flags = 0;
	if (bpf_prog_query(cgroup_fd, BPF_CGROUP_INET4_CONNECT, 0, &flags, ids, &cnt) < 0)
		return 0;
	for (__u32 i = 0; i < cnt; i++) {
		_cleanup_close_ int pfd = bpf_prog_get_fd_by_id(ids[i]);
		__u32 map_ids[16];
		struct bpf_prog_info info = {.nr_map_ids = 16, .map_ids = (__u64)(uintptr_t)map_ids};
		__u32 len = sizeof(info);
		if (pfd < 0 || bpf_obj_get_info_by_fd(pfd, &info, &len) < 0 || strcmp(info.name, "net_connect4"))
			continue;
		int found = 0;
		for (__u32 j = 0; j < info.nr_map_ids && j < 16; j++) {
			_cleanup_close_ int mfd = bpf_map_get_fd_by_id(map_ids[j]);
			struct bpf_map_info mi = {0};
			__u32 mlen = sizeof(mi);
			if (mfd < 0 || bpf_obj_get_info_by_fd(mfd, &mi, &mlen) < 0)
				continue;
			for (int m = 0; m < NETBPF_NMAPS; m++) {
				struct bpf_map *map = skel_map(s, (enum netbpf_map)m);
				if (!strncmp(bpf_map__name(map), mi.name, sizeof(mi.name) - 1) &&
				    bpf_map__reuse_fd(map, mfd) == 0)
					found++;
			}
		}
		return found == NETBPF_NMAPS;
	}
	return 0;
}

static int load(const int *old, size_t n_old, struct net_policy_bpf **ret, bool *reused, struct err *e)
{
	for (int attempt = 0; attempt < 2; attempt++) {
		struct net_policy_bpf *s = net_policy_bpf__open();
		if (!s)
			return err_set(e, errno, "open the network policy BPF programs");
		*reused = false;
		for (size_t i = 0; attempt == 0 && i < n_old && !*reused; i++)
			*reused = take_over_maps(s, old[i]) == 1;
		int r = net_policy_bpf__load(s);
		if (r == 0) {
			*ret = s;
			return 0;
		}
		net_policy_bpf__destroy(s);
		if (!*reused || attempt == 1) /* a second try only when old maps did not fit */
			return err_set(e, -r, "load the network policy BPF programs");
	}
	return err_setx(e, EIO, "load the network policy BPF programs");
}

int netbpf_open(const int *old_cgroup_fds, size_t n_old, struct netbpf **ret, bool *ret_reused, struct err *e)
{
	struct netbpf *b = calloc(1, sizeof(*b));
	if (!b)
		return err_set(e, ENOMEM, "netbpf");
	int r = load(old_cgroup_fds, n_old, &b->skel, ret_reused, e);
	if (r < 0) {
		free(b);
		return r;
	}
	*ret = b;
	return 0;
}

void netbpf_free(struct netbpf *b)
{
	if (!b)
		return;
	net_policy_bpf__destroy(b->skel); /* attachments made with BPF_PROG_ATTACH / tc stay */
	free(b);
}

int netbpf_attach_cgroup(struct netbpf *b, int cgroup_fd, struct err *e)
{
	const struct {
		struct bpf_program *prog;
		enum bpf_attach_type type;
	} at[] = {
		{b->skel->progs.net_connect4, BPF_CGROUP_INET4_CONNECT},
		{b->skel->progs.net_connect6, BPF_CGROUP_INET6_CONNECT},
		{b->skel->progs.net_sendmsg4, BPF_CGROUP_UDP4_SENDMSG},
		{b->skel->progs.net_sendmsg6, BPF_CGROUP_UDP6_SENDMSG},
		{b->skel->progs.net_egress, BPF_CGROUP_INET_EGRESS},
	};
	for (size_t i = 0; i < ARRAY_SIZE(at); i++) {
		int r = bpf_prog_attach(bpf_program__fd(at[i].prog), cgroup_fd, at[i].type, BPF_F_ALLOW_MULTI);
		if (r < 0) {
			r = err_set(e, errno, "attach %s to the sandbox's cgroup", bpf_program__name(at[i].prog));
			while (i-- > 0)
				bpf_prog_detach2(bpf_program__fd(at[i].prog), cgroup_fd, at[i].type);
			return r;
		}
	}
	return 0;
}

int netbpf_attach_tc(struct netbpf *b, int ifindex, struct err *e)
{
	LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = BPF_TC_INGRESS);
	int r = bpf_tc_hook_create(&hook);
	if (r < 0 && r != -EEXIST)
		return err_set(e, -r, "create the clsact qdisc on ifindex %d", ifindex);
	LIBBPF_OPTS(bpf_tc_opts, opts, .handle = 1, .priority = 1,
		    .prog_fd = bpf_program__fd(b->skel->progs.net_tc_ingress));
	r = bpf_tc_attach(&hook, &opts);
	if (r < 0)
		return err_set(e, -r, "attach the tc program on ifindex %d", ifindex);
	return 0;
}
