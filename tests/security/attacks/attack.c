/* Attacks run as root inside a sandbox by tests/security/test_confinement.py. One static binary,
 * one attack per argv[1]. Each attempt prints "BLOCKED what: why" or "ESCAPED what: ..." and the
 * program exits 0 if every attempt was blocked, 1 if any got through (2: usage / setup error).
 * The test also checks the host afterwards: an attack that "fails" here but changed the host is
 * still caught. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <netinet/in.h>
#include <linux/io_uring.h>
#include <linux/keyctl.h>
#include <linux/perf_event.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/klog.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/timex.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <grp.h>
#include <time.h>
#include <unistd.h>

static int escaped;

/* r: the syscall's result (>= 0 = it worked). */
static void verdict(const char *what, long r)
{
	if (r >= 0) {
		printf("ESCAPED %s: returned %ld\n", what, r);
		escaped = 1;
	} else {
		printf("BLOCKED %s: %s\n", what, strerror(errno));
	}
	fflush(stdout);
}
#define TRY(what, expr)                   \
	do {                              \
		errno = 0;                \
		verdict(what, (long)(expr)); \
	} while (0)

static int a_exe(void)
{
	TRY("open /proc/self/exe for writing", open("/proc/self/exe", O_WRONLY));
	TRY("open /proc/1/exe for writing", open("/proc/1/exe", O_WRONLY));
	TRY("open /proc/1/exe O_RDWR|O_TRUNC", open("/proc/1/exe", O_RDWR | O_TRUNC));
	return 0;
}

/* Every fd we hold, and init's: none may lead above the sandbox's root. */
static int a_fds(void)
{
	struct stat root, st;
	if (stat("/", &root) < 0)
		return 2;
	const char *dirs[] = {"/proc/self/fd", "/proc/1/fd"};
	for (int d = 0; d < 2; d++) {
		DIR *dir = opendir(dirs[d]);
		if (!dir) {
			printf("BLOCKED list %s: %s\n", dirs[d], strerror(errno));
			continue;
		}
		struct dirent *de;
		while ((de = readdir(dir))) {
			if (de->d_name[0] == '.')
				continue;
			char path[300], link[512];
			snprintf(path, sizeof(path), "%s/%s", dirs[d], de->d_name);
			ssize_t n = readlink(path, link, sizeof(link) - 1);
			link[n > 0 ? n : 0] = '\0';
			printf("fd %s -> %s\n", path, link);
			int fd = open(path, O_PATH | O_DIRECTORY);
			if (fd < 0)
				continue;
			/* A directory fd: walk up from it as far as it goes. */
			int up = openat(fd, "../../../../../../../../..", O_PATH | O_DIRECTORY);
			if (up >= 0 && fstat(up, &st) == 0 && (st.st_dev != root.st_dev || st.st_ino != root.st_ino)) {
				printf("ESCAPED %s: .. leads outside the sandbox root\n", path);
				escaped = 1;
			}
			close(up);
			close(fd);
		}
		closedir(dir);
	}
	/* Our cwd and init's must be the sandbox root or below. */
	int c = open("/proc/1/cwd", O_PATH | O_DIRECTORY);
	if (c >= 0) {
		int up = openat(c, "../../../../..", O_PATH | O_DIRECTORY);
		if (up >= 0 && fstat(up, &st) == 0 && st.st_ino != root.st_ino) {
			printf("ESCAPED /proc/1/cwd/..: outside the root\n");
			escaped = 1;
		}
	}
	if (access("/work", F_OK) == 0 || access("/proc/1/root/work", F_OK) == 0) {
		printf("ESCAPED host tree visible (/work)\n");
		escaped = 1;
	}
	printf("BLOCKED walking up from every fd and cwd: stays inside\n");
	return 0;
}

static int a_chroot(void)
{
	struct stat root, st;
	stat("/", &root);
	mkdir("/tmp/jail", 0755);
	if (chroot("/tmp/jail") == 0) {
		/* The classic: chroot somewhere below, then climb out of it with .. and chroot there. */
		for (int i = 0; i < 64; i++)
			(void)!chdir("..");
		(void)!chroot(".");
	}
	for (int i = 0; i < 64; i++)
		(void)!chdir("..");
	if (stat(".", &st) == 0 && st.st_ino != root.st_ino)
		printf("(after the climb cwd is not the old root: ino %lu vs %lu)\n", (unsigned long)st.st_ino,
		       (unsigned long)root.st_ino);
	if (access("/work", F_OK) == 0 || access("./work", F_OK) == 0 || access("/etc/debian_version", F_OK) == 0) {
		printf("ESCAPED chroot+..: the host's tree is visible\n");
		escaped = 1;
	} else {
		printf("BLOCKED chroot+..: still inside the sandbox\n");
	}
	return 0;
}

static int a_mount(void)
{
	mkdir("/tmp/m", 0755);
	TRY("mount tmpfs", mount("none", "/tmp/m", "tmpfs", 0, NULL));
	TRY("bind mount /", mount("/", "/tmp/m", NULL, MS_BIND | MS_REC, NULL));
	TRY("remount / read-write with suid", mount(NULL, "/", NULL, MS_REMOUNT, NULL));
	TRY("remount /proc/sys read-write", mount(NULL, "/proc/sys", NULL, MS_REMOUNT | MS_BIND, NULL));
	TRY("mount proc", mount("proc", "/tmp/m", "proc", 0, NULL));
	TRY("mount sysfs", mount("sysfs", "/tmp/m", "sysfs", 0, NULL));
	TRY("mount cgroup v1 (release_agent)", mount("cgroup", "/tmp/m", "cgroup", 0, "memory"));
	TRY("mount cgroup2", mount("cgroup2", "/tmp/m", "cgroup2", 0, NULL));
	TRY("umount /proc/sys (unmask)", umount2("/proc/sys", MNT_DETACH));
	TRY("umount /proc/kcore (unmask)", umount2("/proc/kcore", MNT_DETACH));
	TRY("make / shared", mount(NULL, "/", NULL, MS_SHARED, NULL));
	TRY("fsopen tmpfs", syscall(SYS_fsopen, "tmpfs", 0));
	TRY("fspick /", syscall(SYS_fspick, AT_FDCWD, "/", 0));
	TRY("open_tree clone /", syscall(SYS_open_tree, AT_FDCWD, "/", 1 /* OPEN_TREE_CLONE */));
	TRY("open_tree_attr (467)", syscall(467, AT_FDCWD, "/", 1, NULL, 0));
	TRY("move_mount /proc", syscall(SYS_move_mount, AT_FDCWD, "/proc", AT_FDCWD, "/tmp/m", 0));
	TRY("fsmount", syscall(SYS_fsmount, 3, 0, 0));
	TRY("mount_setattr", syscall(SYS_mount_setattr, AT_FDCWD, "/", 0, NULL, 0));
	TRY("pivot_root", syscall(SYS_pivot_root, ".", "."));
	return 0;
}

static long write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY);
	if (fd < 0)
		return -1;
	long r = write(fd, text, strlen(text));
	int saved = errno;
	close(fd);
	errno = saved;
	return r;
}

/* >= 0 if the file gave any byte; -1 with errno (ENODATA: empty, i.e. masked) otherwise. */
static long read_some(const char *path)
{
	char buf[16];
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, sizeof(buf));
	close(fd);
	if (n == 0)
		errno = ENODATA;
	return n > 0 ? n : -1;
}

static int a_procsys(void)
{
	TRY("write core_pattern", write_file("/proc/sys/kernel/core_pattern", "|/tmp/pwn %p"));
	TRY("write sysrq-trigger", write_file("/proc/sysrq-trigger", "h"));
	TRY("write /proc/sys/kernel/modprobe", write_file("/proc/sys/kernel/modprobe", "/tmp/pwn"));
	TRY("write /proc/sys/vm/drop_caches", write_file("/proc/sys/vm/drop_caches", "3"));
	TRY("write /proc/sys/kernel/hostname", write_file("/proc/sys/kernel/hostname", "pwned"));
	TRY("write /proc/sys/net/ipv4/ip_forward", write_file("/proc/sys/net/ipv4/ip_forward", "1"));
	TRY("read /proc/kcore", read_some("/proc/kcore"));
	TRY("read /proc/keys", read_some("/proc/keys"));
	TRY("read /proc/timer_list", read_some("/proc/timer_list"));
	TRY("mkdir /sys", mkdir("/sys/firmware", 0755) == 0 && access("/sys/firmware/efi", F_OK) == 0 ? 1 : -1);
	TRY("write /sys/kernel/uevent_helper", write_file("/sys/kernel/uevent_helper", "/tmp/pwn"));
	return 0;
}

static int a_handle(void)
{
	struct {
		struct file_handle fh;
		unsigned char buf[128];
	} h = {.fh.handle_bytes = 128};
	int mnt;
	if (name_to_handle_at(AT_FDCWD, "/", &h.fh, &mnt, 0) < 0)
		printf("(name_to_handle_at: %s)\n", strerror(errno));
	int root = open("/", O_RDONLY | O_DIRECTORY);
	TRY("open_by_handle_at of /", syscall(SYS_open_by_handle_at, root, &h.fh, O_RDONLY));
	/* Shocker: inode 2 (the root of an ext4 host filesystem), generation 0. */
	struct {
		struct file_handle fh;
		uint32_t ino, gen;
	} shocker = {.fh = {.handle_bytes = 8, .handle_type = 1}, .ino = 2, .gen = 0};
	TRY("open_by_handle_at of inode 2 (shocker)", syscall(SYS_open_by_handle_at, root, &shocker.fh, O_RDONLY));
	return 0;
}

static int a_kernel(void)
{
	TRY("add_key", syscall(SYS_add_key, "user", "corral", "x", 1, KEY_SPEC_SESSION_KEYRING));
	TRY("keyctl join session", syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, "corral"));
	TRY("request_key", syscall(SYS_request_key, "user", "corral", NULL, KEY_SPEC_SESSION_KEYRING));
	TRY("userfaultfd", syscall(SYS_userfaultfd, O_CLOEXEC));
	struct io_uring_params iop = {0};
	TRY("io_uring_setup", syscall(SYS_io_uring_setup, 4, &iop));
	struct bpf_insn insns[] = {{.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 0, .imm = 0},
				   {.code = BPF_JMP | BPF_EXIT}};
	union bpf_attr attr = {.prog_type = BPF_PROG_TYPE_SOCKET_FILTER, .insn_cnt = 2,
			       .insns = (uintptr_t)insns, .license = (uintptr_t) "GPL"};
	TRY("bpf prog load", syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof(attr)));
	struct perf_event_attr pe = {.type = PERF_TYPE_SOFTWARE, .size = sizeof(pe), .config = PERF_COUNT_SW_CPU_CLOCK};
	TRY("perf_event_open", syscall(SYS_perf_event_open, &pe, 0, -1, -1, 0));
	TRY("init_module", syscall(SYS_init_module, "\x7f" "ELF", 4, ""));
	int fd = open("/bin/busybox", O_RDONLY);
	TRY("finit_module", syscall(SYS_finit_module, fd, "", 0));
	TRY("delete_module", syscall(SYS_delete_module, "loop", O_NONBLOCK));
	TRY("kexec_load", syscall(SYS_kexec_load, 0, 0, NULL, 0));
	TRY("syslog read (dmesg)", klogctl(3 /* READ_ALL */, (char[64]){0}, 64));
	TRY("open /dev/kmsg", open("/dev/kmsg", O_RDONLY));
	TRY("personality READ_IMPLIES_EXEC", syscall(SYS_personality, 0x0400000));
	TRY("iopl", syscall(SYS_iopl, 3));
	TRY("swapon", syscall(SYS_swapon, "/tmp/x", 0));
	TRY("reboot", syscall(SYS_reboot, 0xfee1dead, 672274793, 0x4321fedc, NULL));
	return 0;
}

/* Socket families and protocols whose modules are unlikely to be loaded; each request could make
 * the kernel run modprobe for "net-pf-N". */
static int a_autoload(void)
{
	static const int families[] = {3, 4, 5, 6, 9, 11, 12, 19, 21, 24, 26, 29, 30, 31, 33, 35, 36, 37, 38,
				       39, 40, 41, 42, 43, 44, 45};
	char what[64];
	for (size_t i = 0; i < sizeof(families) / sizeof(families[0]); i++) {
		snprintf(what, sizeof(what), "socket family %d", families[i]);
		TRY(what, socket(families[i], SOCK_DGRAM, 0));
		snprintf(what, sizeof(what), "socketpair family %d", families[i]);
		TRY(what, socketpair(families[i], SOCK_DGRAM, 0, (int[2]){0}));
	}
	static const int inet_protos[] = {132 /* sctp */, 33 /* dccp */, 115 /* l2tp */, 262 /* mptcp */};
	for (size_t i = 0; i < sizeof(inet_protos) / sizeof(inet_protos[0]); i++) {
		snprintf(what, sizeof(what), "socket inet protocol %d", inet_protos[i]);
		TRY(what, socket(AF_INET, SOCK_STREAM, inet_protos[i]));
		snprintf(what, sizeof(what), "socket inet6 protocol %d", inet_protos[i]);
		TRY(what, socket(AF_INET6, SOCK_SEQPACKET, inet_protos[i]));
	}
	static const int nl_protos[] = {2, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 16, 17, 18, 19, 20, 21, 22};
	for (size_t i = 0; i < sizeof(nl_protos) / sizeof(nl_protos[0]); i++) {
		snprintf(what, sizeof(what), "socket netlink protocol %d", nl_protos[i]);
		TRY(what, socket(AF_NETLINK, SOCK_RAW, nl_protos[i]));
	}
	TRY("socket packet (raw)", socket(AF_PACKET, SOCK_RAW, 0));
	TRY("socket inet raw", socket(AF_INET, SOCK_RAW, IPPROTO_RAW));
	return 0;
}

/* Run fn in a child; "BLOCKED" if the child was killed by SIGSYS (the filter's bad-arch action) or
 * the call failed, "ESCAPED" if the foreign-ABI call returned a result. */
static void in_child(const char *what, long (*fn)(void))
{
	int p[2];
	if (pipe(p) < 0)
		return;
	pid_t pid = fork();
	if (pid == 0) {
		long r = fn();
		(void)!write(p[1], &r, sizeof(r));
		_exit(0);
	}
	close(p[1]);
	long r = -1;
	ssize_t n = read(p[0], &r, sizeof(r));
	close(p[0]);
	int st = 0;
	waitpid(pid, &st, 0);
	if (WIFSIGNALED(st)) {
		printf("BLOCKED %s: killed by signal %d\n", what, WTERMSIG(st));
	} else if (n == sizeof(r) && r >= 0 && r < 0xfffff000L) {
		printf("ESCAPED %s: returned %ld\n", what, r);
		escaped = 1;
	} else {
		printf("BLOCKED %s: returned %ld\n", what, r);
	}
	fflush(stdout);
}

static long i386_getpid(void)
{
	long r;
	__asm__ volatile("int $0x80" : "=a"(r) : "a"(20L /* i386 getpid */) : "memory");
	return r;
}

static long i386_mount(void)
{
	long r;
	__asm__ volatile("int $0x80" : "=a"(r) : "a"(21L /* i386 mount */), "b"(0L), "c"(0L), "d"(0L) : "memory");
	return r;
}

static long x32_getpid(void) { return syscall(0x40000000L | 39); }

static int a_abi32(void)
{
	in_child("i386 getpid through int 0x80", i386_getpid);
	in_child("i386 mount through int 0x80", i386_mount);
	in_child("x32 getpid", x32_getpid);
	return 0;
}

static int a_userns(void)
{
	TRY("unshare(CLONE_NEWUSER)", unshare(CLONE_NEWUSER));
	TRY("unshare(CLONE_NEWNS)", unshare(CLONE_NEWNS));
	TRY("unshare(CLONE_NEWNET)", unshare(CLONE_NEWNET));
	TRY("unshare(CLONE_NEWPID)", unshare(CLONE_NEWPID));
	long r = syscall(SYS_clone, (unsigned long)CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
	if (r == 0)
		_exit(0);
	if (r > 0)
		waitpid((pid_t)r, NULL, 0);
	verdict("clone(CLONE_NEWUSER)", r);
	/* Flags above bit 31 are ignored by the kernel: they must not fool the filter. */
	r = syscall(SYS_clone, (unsigned long)CLONE_NEWUSER | SIGCHLD | (1UL << 40), 0, 0, 0, 0);
	if (r == 0)
		_exit(0);
	if (r > 0)
		waitpid((pid_t)r, NULL, 0);
	verdict("clone(CLONE_NEWUSER | bit 40)", r);
	struct {
		uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls;
	} ca = {.flags = CLONE_NEWUSER, .exit_signal = SIGCHLD};
	r = syscall(SYS_clone3, &ca, sizeof(ca));
	if (r == 0)
		_exit(0);
	if (r > 0)
		waitpid((pid_t)r, NULL, 0);
	verdict("clone3(CLONE_NEWUSER)", r);
	TRY("setns", syscall(SYS_setns, open("/proc/self/ns/user", O_RDONLY), 0));
	return 0;
}

static int a_clock(void)
{
	/* Each would set the clock to what it already is: harmless if it got through, but reported. */
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	TRY("clock_settime", clock_settime(CLOCK_REALTIME, &ts));
	struct timeval tv;
	gettimeofday(&tv, NULL);
	TRY("settimeofday", settimeofday(&tv, NULL));
	struct timex tx = {.modes = ADJ_SETOFFSET | ADJ_NANO};
	TRY("clock_adjtime(+0)", syscall(SYS_clock_adjtime, CLOCK_REALTIME, &tx));
	struct timex q = {0};
	TRY("adjtimex", syscall(SYS_adjtimex, &q));
	return 0;
}

static int a_ptrace(void)
{
	TRY("ptrace attach init", ptrace(PTRACE_ATTACH, 1, NULL, NULL));
	TRY("ptrace seize init", ptrace(PTRACE_SEIZE, 1, NULL, NULL));
	char buf[64];
	struct iovec local = {buf, sizeof(buf)}, remote = {(void *)0x400000, sizeof(buf)};
	TRY("process_vm_readv init", syscall(SYS_process_vm_readv, 1, &local, 1, &remote, 1, 0));
	TRY("process_vm_writev init", syscall(SYS_process_vm_writev, 1, &local, 1, &remote, 1, 0));
	TRY("open /proc/1/mem", open("/proc/1/mem", O_RDWR));
	TRY("open /proc/1/mem read-only", open("/proc/1/mem", O_RDONLY));
	TRY("open /proc/1/environ", open("/proc/1/environ", O_RDONLY));
	int pfd = (int)syscall(SYS_pidfd_open, 1, 0);
	printf("(pidfd_open(1) = %d %s)\n", pfd, pfd < 0 ? strerror(errno) : "");
	TRY("pidfd_getfd init's control socket (fd 3)", syscall(SYS_pidfd_getfd, pfd, 3, 0));
	TRY("kcmp init", syscall(SYS_kcmp, getpid(), 1, 0 /* KCMP_FILE */, 0, 0));
	return 0;
}

static int a_tiocsti(void)
{
	int m = posix_openpt(O_RDWR | O_NOCTTY);
	if (m < 0 || grantpt(m) < 0 || unlockpt(m) < 0)
		return 2;
	int s = open(ptsname(m), O_RDWR | O_NOCTTY);
	char c = 'x';
	TRY("TIOCSTI on a pty", ioctl(s, TIOCSTI, &c));
	TRY("TIOCSTI with high bits", syscall(SYS_ioctl, s, (unsigned long)TIOCSTI | (1UL << 32), &c));
	TRY("TIOCSTI on stdin", ioctl(0, TIOCSTI, &c));
	char sub = 11; /* TIOCL_GETKMSGREDIRECT: any subcode */
	TRY("TIOCLINUX", ioctl(s, TIOCLINUX, &sub));
	return 0;
}

static int a_kallsyms(void)
{
	FILE *f = fopen("/proc/kallsyms", "r");
	if (!f) {
		printf("BLOCKED read /proc/kallsyms: %s\n", strerror(errno));
		return 0;
	}
	char line[512];
	unsigned long n = 0, nonzero = 0;
	while (fgets(line, sizeof(line), f)) {
		n++;
		if (strtoull(line, NULL, 16) != 0)
			nonzero++;
	}
	fclose(f);
	if (nonzero) {
		printf("ESCAPED /proc/kallsyms: %lu of %lu addresses visible\n", nonzero, n);
		escaped = 1;
	} else {
		printf("BLOCKED /proc/kallsyms: %lu lines, no address\n", n);
	}
	return 0;
}

/* As an unprivileged user (nobody), exec path as busybox's "cat" of its own status: neither a
 * setuid bit nor file capabilities may raise its uid or capabilities. */
static int run_as_nobody(const char *path, char *out, size_t size)
{
	int p[2];
	if (pipe(p) < 0)
		return -1;
	pid_t pid = fork();
	if (pid == 0) {
		dup2(p[1], 1);
		if (setgroups(0, NULL) < 0 || setresgid(65534, 65534, 65534) < 0 || setresuid(65534, 65534, 65534) < 0)
			_exit(3);
		char *argv[] = {"cat", "/proc/self/status", NULL};
		execv(path, argv);
		_exit(4);
	}
	close(p[1]);
	ssize_t n, off = 0;
	while ((n = read(p[0], out + off, size - 1 - (size_t)off)) > 0)
		off += n;
	out[off] = '\0';
	close(p[0]);
	int st;
	waitpid(pid, &st, 0);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void check_status(const char *what, const char *status)
{
	const char *uid = strstr(status, "\nUid:"), *eff = strstr(status, "\nCapEff:"), *prm = strstr(status, "\nCapPrm:");
	if (!uid || !eff || !prm) {
		printf("ESCAPED %s: could not read its status (%.200s)\n", what, status);
		escaped = 1;
		return;
	}
	unsigned ruid, euid;
	sscanf(uid + 5, "%u %u", &ruid, &euid);
	unsigned long long ce = strtoull(eff + 8, NULL, 16), cp = strtoull(prm + 8, NULL, 16);
	if (euid != 65534 || ce || cp) {
		printf("ESCAPED %s: euid %u, CapEff %llx, CapPrm %llx\n", what, euid, ce, cp);
		escaped = 1;
	} else {
		printf("BLOCKED %s: still nobody, no capabilities\n", what);
	}
}

static int a_setuid(const char *suid_path, const char *fcap_path)
{
	char out[8192];
	struct stat st;
	if (stat(suid_path, &st) < 0 || !(st.st_mode & S_ISUID) || st.st_uid != 0)
		return printf("setup: %s is not setuid root\n", suid_path), 2;
	int r = run_as_nobody(suid_path, out, sizeof(out));
	if (r != 0)
		return printf("setup: running %s as nobody failed (%d)\n", suid_path, r), 2;
	check_status("setuid-root binary run by nobody", out);
	/* File capabilities: VFS_CAP_REVISION_2, every capability permitted, effective bit set. */
	struct {
		uint32_t magic_etc;
		struct {
			uint32_t permitted, inheritable;
		} data[2];
	} cap = {0x02000000 | 0x000001, {{0xffffffff, 0}, {0x1ff, 0}}};
	if (setxattr(fcap_path, "security.capability", &cap, sizeof(cap), 0) < 0)
		printf("(setxattr security.capability: %s)\n", strerror(errno));
	r = run_as_nobody(fcap_path, out, sizeof(out));
	if (r != 0)
		return printf("setup: running %s as nobody failed (%d)\n", fcap_path, r), 2;
	check_status("binary with file capabilities run by nobody", out);
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc < 2)
		return 2;
	const char *a = argv[1];
	int r = !strcmp(a, "exe")        ? a_exe()
		: !strcmp(a, "fds")      ? a_fds()
		: !strcmp(a, "chroot")   ? a_chroot()
		: !strcmp(a, "mount")    ? a_mount()
		: !strcmp(a, "procsys")  ? a_procsys()
		: !strcmp(a, "handle")   ? a_handle()
		: !strcmp(a, "kernel")   ? a_kernel()
		: !strcmp(a, "autoload") ? a_autoload()
		: !strcmp(a, "abi32")    ? a_abi32()
		: !strcmp(a, "userns")   ? a_userns()
		: !strcmp(a, "clock")    ? a_clock()
		: !strcmp(a, "ptrace")   ? a_ptrace()
		: !strcmp(a, "tiocsti")  ? a_tiocsti()
		: !strcmp(a, "kallsyms") ? a_kallsyms()
		: !strcmp(a, "setuid") && argc == 4 ? a_setuid(argv[2], argv[3])
					 : (printf("unknown attack %s\n", a), 2);
	if (r)
		return r;
	return escaped;
}
