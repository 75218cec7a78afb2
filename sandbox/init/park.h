/* The adoption fd: while no daemon is connected, the daemon's end of a fresh control socket sits
 * at INITPROTO_ADOPT_FD for a restarted daemon to take with pidfd_getfd(). At all other times that
 * number is closed, so a daemon polling for it sees EBADF until the socket is there; every fd init
 * keeps open must therefore stay off that number (park_avoid). */
#pragma once

/* Make a new control socketpair: *ret_sock is init's end, the other end is parked. 0 or -errno. */
int park_new(int *ret_sock);
/* Close the parked end (a daemon spoke on it), so that daemon's death reads as EOF. */
void park_drop(void);
/* Return fd, moved elsewhere (O_CLOEXEC) if it is INITPROTO_ADOPT_FD; -errno with fd closed. */
int park_avoid(int fd);
