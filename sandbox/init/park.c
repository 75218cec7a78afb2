/* The adoption fd (see park.h). */
#include "init/park.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "init/initproto.h"

int park_avoid(int fd)
{
	if (fd != INITPROTO_ADOPT_FD)
		return fd;
	int moved = fcntl(fd, F_DUPFD_CLOEXEC, INITPROTO_ADOPT_FD + 1);
	int r = moved < 0 ? -errno : moved;
	close(fd);
	return r;
}

int park_new(int *ret_sock)
{
	int sp[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) < 0)
		return -errno;
	int mine = park_avoid(sp[0]); /* dup3 below must not replace it */
	if (mine < 0) {
		close(sp[1]);
		return mine;
	}
	if (sp[1] != INITPROTO_ADOPT_FD) {
		if (dup3(sp[1], INITPROTO_ADOPT_FD, O_CLOEXEC) < 0) {
			int r = -errno;
			close(mine);
			close(sp[1]);
			return r;
		}
		close(sp[1]);
	}
	*ret_sock = mine;
	return 0;
}

void park_drop(void) { close(INITPROTO_ADOPT_FD); }
