/* corrald: the corral daemon. Parses flags, sets up the manager, runs the event loop. */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/manager.h"
#include "util/fs.h"
#include "util/misc.h"

static void usage(FILE *out)
{
	fprintf(out,
		"Usage: corrald [OPTIONS]\n"
		"Runs the corral sandbox service: gRPC on a unix socket (and optionally TCP).\n\n"
		"  --socket PATH          unix socket to serve on (default " DEFAULT_SOCKET ")\n"
		"  --state-dir DIR        database, image layers, sandbox dirs (default " DEFAULT_STATE_DIR ")\n"
		"  --listen HOST:PORT     also serve on TCP; needs --token-file\n"
		"  --token-file FILE      bearer token required on every TCP call (first line, >= 16 chars)\n"
		"  --cgroup-parent NAME   cgroup subtree for sandboxes (default corral)\n"
		"  --init PATH            corral-init binary (default: next to corrald)\n"
		"  --max-sandboxes N      running sandboxes allowed at once (default 1000)\n"
		"  --output-buffer BYTES  output retained per exec stream (default 16777216)\n"
		"  --retention SECONDS    finished sandboxes stay visible this long (default 600)\n"
		"  --uid-base UID         first host uid of sandbox uid ranges (default 100000000;\n"
		"                         each sandbox gets 65536 uids)\n"
		"  --log-level LEVEL      debug, info, warn or error (default info)\n"
		"  --default-memory-mib N memory limit of sandboxes that set none (default 0: no limit)\n"
		"  --default-disk-mib N   writable layer size of sandboxes that set none (default 10240)\n"
		"  --default-pids N       process/thread limit of sandboxes that set none (default 4096)\n"
		"  --require-hardening    refuse to start unless seccomp, user namespaces, cgroup limits and\n"
		"                         the BPF device program can all be applied\n"
		"  --no-confinement       FOR BENCHMARKS ONLY: sandboxes keep their namespaces but get no\n"
		"                         capability drop, seccomp, Landlock or /proc masks. Never run\n"
		"                         untrusted code on a daemon started with it\n"
		"  --net-subnet CIDR      address pool of networked sandboxes, one /31 each (default 10.88.0.0/16)\n"
		"  --net-uplink IFACE     interface sandbox traffic is masqueraded to (default: the default route's)\n"
		"  --pool-size N          sandboxes kept started ahead for the image last asked for, handed\n"
		"                         out by CreateSandbox when the request fits (default 2; 0: off)\n"
		"  --no-network           refuse sandboxes with outbound network (no NAT, no forwarding on this\n"
		"                         host); exposed ports still work\n"
		"  --dns ADDR[,ADDR...]   resolvers networked sandboxes may query (default: /etc/resolv.conf's)\n"
		"  --port-bind ADDR       host address where exposed sandbox ports listen (default 127.0.0.1)\n"
		"  --version              print the version\n"
		"  --help                 this text\n\n"
		"Sandboxes keep running when corrald stops; a corrald started on the same state dir adopts them.\n");
}

enum { OPT_SOCKET = 256, OPT_STATE, OPT_LISTEN, OPT_TOKEN, OPT_CGROUP, OPT_INIT, OPT_MAX, OPT_OUTBUF, OPT_RETENTION,
       OPT_UIDBASE, OPT_LOG, OPT_VERSION, OPT_HELP };
enum { OPT_REQUIRE_HARDENING = 512, OPT_NO_CONFINEMENT };
enum { OPT_DEFAULT_MEMORY = 768, OPT_DEFAULT_DISK, OPT_DEFAULT_PIDS };
enum { OPT_NET_SUBNET = 1024, OPT_NET_UPLINK, OPT_DNS, OPT_PORT_BIND, OPT_NO_NETWORK };
enum { OPT_POOL_SIZE = 1280 };

static bool copy_arg(char *dst, size_t size, const char *flag, const char *val)
{
	if (strlen(val) >= size) {
		fprintf(stderr, "corrald: %s: value too long\n", flag);
		return false;
	}
	memcpy(dst, val, strlen(val) + 1);
	return true;
}

static bool number_arg(const char *flag, const char *val, uint64_t min, uint64_t max, uint64_t *ret)
{
	if (!parse_u64(val, ret) || *ret < min || *ret > max) {
		fprintf(stderr, "corrald: %s: expected a number from %llu to %llu, got \"%s\"\n", flag,
			(unsigned long long)min, (unsigned long long)max, val);
		return false;
	}
	return true;
}

static int parse_args(int argc, char **argv, struct config *cfg)
{
	static const struct option opts[] = {
		{"socket", required_argument, NULL, OPT_SOCKET},   {"state-dir", required_argument, NULL, OPT_STATE},
		{"listen", required_argument, NULL, OPT_LISTEN},   {"token-file", required_argument, NULL, OPT_TOKEN},
		{"cgroup-parent", required_argument, NULL, OPT_CGROUP}, {"init", required_argument, NULL, OPT_INIT},
		{"max-sandboxes", required_argument, NULL, OPT_MAX}, {"output-buffer", required_argument, NULL, OPT_OUTBUF},
		{"retention", required_argument, NULL, OPT_RETENTION}, {"uid-base", required_argument, NULL, OPT_UIDBASE},
		{"log-level", required_argument, NULL, OPT_LOG},   {"version", no_argument, NULL, OPT_VERSION},
		{"require-hardening", no_argument, NULL, OPT_REQUIRE_HARDENING},
		{"no-confinement", no_argument, NULL, OPT_NO_CONFINEMENT},
		{"default-memory-mib", required_argument, NULL, OPT_DEFAULT_MEMORY},
		{"default-disk-mib", required_argument, NULL, OPT_DEFAULT_DISK},
		{"default-pids", required_argument, NULL, OPT_DEFAULT_PIDS},
		{"net-subnet", required_argument, NULL, OPT_NET_SUBNET},
		{"net-uplink", required_argument, NULL, OPT_NET_UPLINK},
		{"no-network", no_argument, NULL, OPT_NO_NETWORK},
		{"pool-size", required_argument, NULL, OPT_POOL_SIZE},
		{"dns", required_argument, NULL, OPT_DNS},
		{"port-bind", required_argument, NULL, OPT_PORT_BIND},
		{"help", no_argument, NULL, OPT_HELP},             {NULL, 0, NULL, 0},
	};
	uint64_t v;
	int c;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		bool ok = true;
		switch (c) {
		case OPT_SOCKET: ok = copy_arg(cfg->socket_path, sizeof(cfg->socket_path), "--socket", optarg); break;
		case OPT_STATE: ok = copy_arg(cfg->state_dir, sizeof(cfg->state_dir), "--state-dir", optarg); break;
		case OPT_LISTEN: ok = copy_arg(cfg->listen, sizeof(cfg->listen), "--listen", optarg); break;
		case OPT_TOKEN: ok = copy_arg(cfg->token_file, sizeof(cfg->token_file), "--token-file", optarg); break;
		case OPT_INIT: ok = copy_arg(cfg->init_path, sizeof(cfg->init_path), "--init", optarg); break;
		case OPT_CGROUP:
			ok = name_is_valid(optarg, sizeof(cfg->cgroup_parent) - 1) &&
			     copy_arg(cfg->cgroup_parent, sizeof(cfg->cgroup_parent), "--cgroup-parent", optarg);
			if (!ok)
				fprintf(stderr, "corrald: --cgroup-parent: expected a simple name\n");
			break;
		case OPT_MAX:
			ok = number_arg("--max-sandboxes", optarg, 1, 100000, &v);
			cfg->max_sandboxes = (uint32_t)v;
			break;
		case OPT_OUTBUF:
			ok = number_arg("--output-buffer", optarg, 65536, 1ULL << 32, &v);
			cfg->output_buffer = v;
			break;
		case OPT_RETENTION:
			ok = number_arg("--retention", optarg, 0, 30 * 86400, &v);
			cfg->retention_s = (uint32_t)v;
			break;
		case OPT_UIDBASE:
			ok = number_arg("--uid-base", optarg, 65536, 3000000000ULL, &v);
			cfg->uid_base = (uid_t)v;
			break;
		case OPT_LOG:
			if (!strcmp(optarg, "debug"))
				cfg->log_level = LOG_LEVEL_DEBUG;
			else if (!strcmp(optarg, "info"))
				cfg->log_level = LOG_LEVEL_INFO;
			else if (!strcmp(optarg, "warn"))
				cfg->log_level = LOG_LEVEL_WARN;
			else if (!strcmp(optarg, "error"))
				cfg->log_level = LOG_LEVEL_ERROR;
			else {
				fprintf(stderr, "corrald: --log-level: expected debug, info, warn or error\n");
				ok = false;
			}
			break;
		case OPT_REQUIRE_HARDENING: cfg->require_hardening = true; break;
		case OPT_NO_CONFINEMENT: cfg->no_confinement = true; break;
		case OPT_DEFAULT_MEMORY: /* 0: no limit; else as resources.memory_mib allows */
			ok = number_arg("--default-memory-mib", optarg, 0, 1024ULL * 1024 * 1024, &v);
			if (ok && v && v < 8) {
				fprintf(stderr, "corrald: --default-memory-mib: 0 (no limit) or at least 8\n");
				ok = false;
			}
			cfg->default_memory_mib = v;
			break;
		case OPT_DEFAULT_DISK:
			ok = number_arg("--default-disk-mib", optarg, 1, 1024ULL * 1024, &v);
			cfg->default_disk_mib = v;
			break;
		case OPT_DEFAULT_PIDS:
			ok = number_arg("--default-pids", optarg, 16, 4u * 1024 * 1024, &v);
			cfg->default_pids = (uint32_t)v;
			break;
		case OPT_NET_SUBNET: ok = copy_arg(cfg->net_subnet, sizeof(cfg->net_subnet), "--net-subnet", optarg); break;
		case OPT_NET_UPLINK: ok = copy_arg(cfg->net_uplink, sizeof(cfg->net_uplink), "--net-uplink", optarg); break;
		case OPT_NO_NETWORK: cfg->no_network = true; break;
		case OPT_POOL_SIZE:
			ok = number_arg("--pool-size", optarg, 0, 64, &v);
			cfg->pool_size = (uint32_t)v;
			break;
		case OPT_DNS: ok = copy_arg(cfg->net_dns, sizeof(cfg->net_dns), "--dns", optarg); break;
		case OPT_PORT_BIND: ok = copy_arg(cfg->port_bind, sizeof(cfg->port_bind), "--port-bind", optarg); break;
		case OPT_VERSION: printf("corrald %s\n", CORRAL_VERSION); return 1;
		case OPT_HELP: usage(stdout); return 1;
		default: usage(stderr); return -1;
		}
		if (!ok)
			return -1;
	}
	if (optind < argc) {
		fprintf(stderr, "corrald: unexpected argument \"%s\"\n", argv[optind]);
		return -1;
	}
	/* Paths below the state dir are built in PATH_MAX buffers; keep the root well short of it. */
	if (strlen(cfg->state_dir) > 512 || cfg->state_dir[0] != '/') {
		fprintf(stderr, "corrald: --state-dir must be an absolute path of at most 512 bytes\n");
		return -1;
	}
	if (cfg->require_hardening && cfg->no_confinement) {
		fprintf(stderr, "corrald: --require-hardening and --no-confinement contradict each other\n");
		return -1;
	}
	if (strlen(cfg->socket_path) >= 108) {
		fprintf(stderr, "corrald: --socket path must be shorter than 108 bytes (a unix socket limit)\n");
		return -1;
	}
	if ((uint64_t)cfg->uid_base + (uint64_t)cfg->max_sandboxes * UID_RANGE > 4000000000ULL) {
		fprintf(stderr, "corrald: --uid-base + --max-sandboxes * 65536 exceeds the uid space\n");
		return -1;
	}
	return 0;
}

static void default_init_path(char *buf, size_t size)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n <= 0) {
		snprintf(buf, size, "corral-init");
		return;
	}
	self[n] = '\0';
	snprintf(buf, size, "%s/corral-init", dirname(self));
}

static void on_signal(uv_signal_t *s, int signum)
{
	struct manager *m = s->data;
	log_info("received signal %d", signum);
	manager_stop(m);
}

int main(int argc, char **argv)
{
	struct config cfg = {
		.socket_path = DEFAULT_SOCKET,
		.state_dir = DEFAULT_STATE_DIR,
		.cgroup_parent = "corral",
		.max_sandboxes = 1000,
		.pool_size = 2,
		.output_buffer = 16 * 1024 * 1024,
		.retention_s = 600,
		.uid_base = 100000000,
		.log_level = LOG_LEVEL_INFO,
		.net_subnet = "10.88.0.0/16",
		.port_bind = "127.0.0.1",
	};
	int r = parse_args(argc, argv, &cfg);
	if (r != 0)
		return r > 0 ? 0 : 2;
	if (!cfg.init_path[0])
		default_init_path(cfg.init_path, sizeof(cfg.init_path));
	log_set_level(cfg.log_level);
	if (geteuid() != 0) {
		fprintf(stderr, "corrald: must run as root (it creates namespaces, mounts and cgroups)\n");
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	/* Sandboxes must not inherit the daemon's supplementary groups: with setgroups denied in
	 * their user namespace they could never drop them. */
	if (setgroups(0, NULL) < 0) {
		fprintf(stderr, "corrald: setgroups: %s\n", strerror(errno));
		return 1;
	}
	char sockdir[PATH_MAX];
	snprintf(sockdir, sizeof(sockdir), "%s", cfg.socket_path);
	struct err e = {0};
	if (fs_mkdir_p(dirname(sockdir), 0755, &e) < 0) {
		fprintf(stderr, "corrald: socket directory: %s\n", e.msg);
		return 1;
	}
	uv_loop_t *loop = uv_default_loop();
	static struct manager m; /* the daemon's one manager: lives for the whole process */
	if (manager_init(&m, loop, &cfg, &e) < 0 || manager_adopt(&m, &e) < 0) {
		fprintf(stderr, "corrald: %s\n", e.msg);
		manager_free(&m);
		return 1;
	}
	uv_signal_t sigterm, sigint;
	uv_signal_init(loop, &sigterm);
	uv_signal_init(loop, &sigint);
	sigterm.data = sigint.data = &m;
	uv_signal_start(&sigterm, on_signal, SIGTERM);
	uv_signal_start(&sigint, on_signal, SIGINT);
	log_info("corrald %s serving on %s (state %s, cgroups %s)", CORRAL_VERSION, cfg.socket_path, cfg.state_dir,
		 cgroup_mode_name(m.cgroups.mode));
	uv_run(loop, UV_RUN_DEFAULT);
	uv_close((uv_handle_t *)&sigterm, NULL);
	uv_close((uv_handle_t *)&sigint, NULL);
	manager_free(&m);
	uv_run(loop, UV_RUN_NOWAIT); /* let close callbacks free their handles */
	return 0;
}
