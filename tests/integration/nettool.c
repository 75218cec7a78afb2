/* Network probe run INSIDE a sandbox by tests/integration/test_network.py and
 * tests/security/test_network_escape.py (copied in through an exec's stdin, built static).
 * Every line it prints is "OK ..." or "ERR <errno name> ...", with the elapsed milliseconds.
 *   nettool connect HOST PORT [TIMEOUT_MS]   TCP connect, read what the server sends
 *   nettool udp HOST PORT                    one datagram "ping"
 *   nettool rawspoof SRC DST PORT            raw IPv4/UDP datagram with a forged source
 *   nettool hold HOST PORT                   echo a byte every 100 ms until the flow stops */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/ip.h>
#include <netinet/udp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int resolve(const char *host, const char *port, int type, struct sockaddr_storage *ss, socklen_t *len)
{
	struct addrinfo hints = {.ai_socktype = type, .ai_flags = AI_NUMERICHOST}, *res;
	/* inet_aton forms ("2852039166") are numeric for getaddrinfo too. */
	if (getaddrinfo(host, port, &hints, &res) != 0)
		return -1;
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

static int fail(const char *what, double t0)
{
	printf("ERR %s %.2f %s\n", strerrorname_np(errno) ? strerrorname_np(errno) : "?", now_ms() - t0, what);
	return 1;
}

static int do_connect(const char *host, const char *port, int timeout_ms)
{
	struct sockaddr_storage ss;
	socklen_t len;
	double t0 = now_ms();
	if (resolve(host, port, SOCK_STREAM, &ss, &len) < 0) {
		errno = EINVAL;
		return fail("resolve", t0);
	}
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return fail("socket", t0);
	if (connect(fd, (struct sockaddr *)&ss, len) < 0 && errno != EINPROGRESS)
		return fail("connect", t0);
	struct pollfd p = {.fd = fd, .events = POLLOUT};
	if (poll(&p, 1, timeout_ms) != 1) {
		errno = ETIMEDOUT;
		return fail("connect", t0);
	}
	int soerr = 0;
	socklen_t sl = sizeof(soerr);
	getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
	if (soerr) {
		errno = soerr;
		return fail("connect", t0);
	}
	double t1 = now_ms();
	char buf[256] = "";
	p.events = POLLIN;
	ssize_t n = 0;
	if (poll(&p, 1, timeout_ms) == 1)
		n = read(fd, buf, sizeof(buf) - 1);
	buf[n > 0 ? n : 0] = '\0';
	buf[strcspn(buf, "\r\n")] = '\0';
	printf("OK %.2f %s\n", t1 - t0, buf);
	return 0;
}

static int do_udp(const char *host, const char *port)
{
	struct sockaddr_storage ss;
	socklen_t len;
	double t0 = now_ms();
	if (resolve(host, port, SOCK_DGRAM, &ss, &len) < 0) {
		errno = EINVAL;
		return fail("resolve", t0);
	}
	int fd = socket(ss.ss_family, SOCK_DGRAM, 0);
	if (fd < 0)
		return fail("socket", t0);
	if (sendto(fd, "ping", 4, 0, (struct sockaddr *)&ss, len) < 0)
		return fail("sendto", t0);
	printf("OK %.2f sent\n", now_ms() - t0);
	return 0;
}

static uint16_t csum(const void *data, size_t len)
{
	const uint16_t *p = data;
	uint32_t sum = 0;
	for (; len > 1; len -= 2)
		sum += *p++;
	if (len)
		sum += *(const uint8_t *)p;
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

static int do_rawspoof(const char *src, const char *dst, const char *port)
{
	double t0 = now_ms();
	int fd = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);
	if (fd < 0)
		return fail("socket", t0);
	struct {
		struct iphdr ip;
		struct udphdr udp;
		char data[8];
	} __attribute__((packed)) pkt = {0};
	memcpy(pkt.data, "spoofed!", 8);
	pkt.ip.version = 4;
	pkt.ip.ihl = 5;
	pkt.ip.ttl = 64;
	pkt.ip.protocol = IPPROTO_UDP;
	pkt.ip.tot_len = htons(sizeof(pkt));
	inet_pton(AF_INET, src, &pkt.ip.saddr);
	inet_pton(AF_INET, dst, &pkt.ip.daddr);
	pkt.ip.check = csum(&pkt.ip, sizeof(pkt.ip));
	pkt.udp.source = htons(4242);
	pkt.udp.dest = htons((uint16_t)strtol(port, NULL, 10));
	pkt.udp.len = htons(sizeof(pkt.udp) + sizeof(pkt.data));
	struct sockaddr_in to = {.sin_family = AF_INET, .sin_addr.s_addr = pkt.ip.daddr};
	if (sendto(fd, &pkt, sizeof(pkt), 0, (struct sockaddr *)&to, sizeof(to)) < 0)
		return fail("sendto", t0);
	printf("OK %.2f sent\n", now_ms() - t0);
	return 0;
}

static int do_hold(const char *host, const char *port)
{
	struct sockaddr_storage ss;
	socklen_t len;
	double t0 = now_ms();
	if (resolve(host, port, SOCK_STREAM, &ss, &len) < 0)
		return fail("resolve", t0);
	int fd = socket(ss.ss_family, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&ss, len) < 0)
		return fail("connect", t0);
	for (int i = 0; i < 600; i++) {
		char c = 'x';
		if (write(fd, &c, 1) != 1)
			return fail("write", t0);
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, 1000) != 1 || read(fd, &c, 1) != 1) {
			printf("CUT after %d echoes\n", i);
			fflush(stdout);
			return 0;
		}
		printf("echo %d\n", i);
		fflush(stdout);
		usleep(100 * 1000);
	}
	printf("NOT CUT\n");
	return 1;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc >= 4 && !strcmp(argv[1], "connect"))
		return do_connect(argv[2], argv[3], argc > 4 ? (int)strtol(argv[4], NULL, 10) : 3000);
	if (argc == 4 && !strcmp(argv[1], "udp"))
		return do_udp(argv[2], argv[3]);
	if (argc == 5 && !strcmp(argv[1], "rawspoof"))
		return do_rawspoof(argv[2], argv[3], argv[4]);
	if (argc == 4 && !strcmp(argv[1], "hold"))
		return do_hold(argv[2], argv[3]);
	fprintf(stderr, "usage: nettool connect|udp|rawspoof|hold ...\n");
	return 2;
}
