#include "runtime/confine.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "runtime/landlock.h"

int confine_new(bool enabled, struct confine **ret, struct err *e)
{
	struct confine *c = calloc(1, sizeof(*c));
	if (!c)
		return err_set(e, ENOMEM, "confinement policy");
	c->enabled = enabled;
	c->landlock_abi = -ENOTSUP;
	if (!enabled) {
		*ret = c;
		return 0;
	}
	int r = caps_policy_init(&c->caps, e);
	if (r >= 0)
		r = seccomp_policy_build(&c->seccomp, e);
	if (r < 0) {
		confine_free(c);
		return r;
	}
	c->landlock_abi = landlock_probe_abi();
	/* A user namespace cannot raise a hard limit (that takes CAP_SYS_RESOURCE on the host): stay
	 * within the daemon's own. */
	struct rlimit cur;
	if (getrlimit(RLIMIT_NOFILE, &cur) < 0)
		cur.rlim_max = CONFINE_NOFILE_HARD;
	c->nofile_hard = cur.rlim_max < CONFINE_NOFILE_HARD ? cur.rlim_max : CONFINE_NOFILE_HARD;
	c->nofile_soft = c->nofile_hard < CONFINE_NOFILE_SOFT ? c->nofile_hard : CONFINE_NOFILE_SOFT;
	*ret = c;
	return 0;
}

void confine_free(struct confine *c)
{
	if (!c)
		return;
	seccomp_policy_free(&c->seccomp);
	free(c);
}

bool confine_masks(const struct confine *c) { return c && c->enabled; }

int confine_apply(const struct confine *c, struct err *e)
{
	if (!c || !c->enabled)
		return 0;
	/* No core dumps: a crashing process must not write its memory anywhere (nor trigger a host
	 * core_pattern helper). Raw prlimit64: glibc's setrlimit is fine too, but this says plainly
	 * that no wrapper state is involved. */
	struct rlimit core = {0, 0}, nofile = {c->nofile_soft, c->nofile_hard};
	if (syscall(SYS_prlimit64, 0, RLIMIT_CORE, &core, NULL) < 0 ||
	    syscall(SYS_prlimit64, 0, RLIMIT_NOFILE, &nofile, NULL) < 0)
		return err_setx(e, errno, "set resource limits");
	int r = caps_policy_apply(&c->caps, e);
	if (r < 0)
		return r;
	/* From here no exec can gain privileges (setuid bits, file capabilities), also not for a
	 * process that later changes its uids. */
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return err_setx(e, errno, "set no_new_privs");
	if ((r = landlock_apply(c->landlock_abi, e)) < 0)
		return r;
	/* Last: the filter governs every syscall after it, up to and including execveat. */
	return seccomp_policy_apply(&c->seccomp, e);
}
