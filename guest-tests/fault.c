/* Page faults on p2pmem: SIGBUS after the page is gone, and the write-protect fault loop
 * (docs/behaviour.md sections 1.2 and 8.9). */
#define AREA "fault"
#include "lib/probe.h"

CASE(sigbus_after_dontneed, "MADV_DONTNEED returns the page to the pool; the next access gets SIGBUS (BUS_ADRERR)")
{
	int fd = p2p_open();
	char *p = p2p_map(fd, 2 * PAGE);
	if (p == MAP_FAILED)
		probe_fail("mmap");
	p[0] = 1;
	long long before = p2p_available();
	int rc = madvise(p, PAGE, MADV_DONTNEED);
	obs_errno("madvise", rc ? errno : 0);
	obs_int("available_gain", p2p_available() - before);
	int sig = touch(p, 0, 0);
	obs_str("next_read", signame(sig));
	obs_int("si_code", sig ? fault_code : 0);
	munmap(p, 2 * PAGE);
	close(fd);
}

CASE(mremap_grow_tail, "mremap grows the mapping; the old part keeps its data, the new tail has no page (SIGBUS)")
{
	int fd = p2p_open();
	char *p = p2p_map(fd, PAGE);
	if (p == MAP_FAILED)
		probe_fail("mmap");
	p[0] = 'k';
	char *q = mremap(p, PAGE, 2 * PAGE, MREMAP_MAYMOVE);
	obs_errno("mremap", q == MAP_FAILED ? errno : 0);
	if (q == MAP_FAILED)
		return;
	obs_bool("old_data_kept", touch(q, 0, 0) == 0 && q[0] == 'k');
	obs_str("new_tail_read", signame(touch(q + PAGE, 0, 0)));
	munmap(q, 2 * PAGE);
	close(fd);
}

/* Run `trigger` then a write in a child under a watchdog: a correct kernel either completes the write or
 * delivers SIGBUS; the 6.12 bug re-faults forever. Reports the outcome and the child's minor-fault rate. */
enum wp_trigger { WP_MPROTECT, WP_CLEAR_REFS, WP_PROT_NONE };

static void wp_write_under_watchdog(enum wp_trigger trigger)
{
	int fd = p2p_open();
	volatile char *p = trigger == WP_PROT_NONE ? mmap(NULL, PAGE, PROT_NONE, MAP_SHARED, fd, 0) : p2p_map(fd, PAGE);
	if (p == MAP_FAILED)
		probe_fail("mmap");
	int go[2];
	if (pipe(go))
		probe_fail("pipe");
	pid_t pid = fork();
	if (pid == 0) {
		char c;
		if (trigger == WP_CLEAR_REFS) {
			(void)p[0]; /* map it clean */
			if (write_file("/proc/self/clear_refs", "4") < 0)
				_exit(3);
		} else if (trigger == WP_MPROTECT) {
			if (mprotect((void *)p, PAGE, PROT_READ) || mprotect((void *)p, PAGE, PROT_READ | PROT_WRITE))
				_exit(4);
		} else if (mprotect((void *)p, PAGE, PROT_READ | PROT_WRITE)) {
			_exit(4);
		}
		if (read(go[0], &c, 1) != 1)
			_exit(5);
		p[0] = 'w'; /* the write that loops on an affected kernel */
		_exit(p[0] == 'w' ? 0 : 6);
	}
	if (write(go[1], "g", 1) != 1)
		probe_fail("pipe");
	int st = 0;
	/* a write takes milliseconds; the livelocked one faults all along (about 250000 faults a second under TCG) */
	double t0 = now_s(), limit = 0.5;
	pid_t done = 0;
	while (now_s() - t0 < limit && (done = waitpid(pid, &st, WNOHANG)) == 0)
		usleep(20000);
	if (done == 0) {
		char path[64], stat[1024];
		snprintf(path, sizeof(path), "/proc/%d/stat", pid);
		long minflt = -1;
		if (read_file(path, stat, sizeof(stat)) > 0) {
			char *s = strrchr(stat, ')');
			/* fields after ")": state ppid pgrp session tty tpgid flags minflt */
			if (s && sscanf(s + 2, "%*c %*d %*d %*d %*d %*d %*u %ld", &minflt) != 1)
				minflt = -1;
		}
		kill(pid, SIGKILL);
		waitpid(pid, &st, 0);
		obs_str("outcome", "livelock");
		obs_int("minor_faults_per_s", minflt < 0 ? -1 : (long)(minflt / limit));
	} else if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
		obs_str("outcome", "write_ok");
	} else if (WIFSIGNALED(st) && WTERMSIG(st) == SIGBUS) {
		obs_str("outcome", "sigbus");
	} else {
		char what[64];
		snprintf(what, sizeof(what), "child status 0x%x", st);
		obs_str("outcome", what);
	}
	munmap((void *)p, PAGE);
	close(fd);
}

CASE(wp_loop_mprotect, "mprotect read-only then read-write on a never-written page, then a write: completes or SIGBUS")
{
	wp_write_under_watchdog(WP_MPROTECT);
}

CASE(wp_loop_clear_refs, "soft-dirty reset (clear_refs 4) then a write: completes or SIGBUS")
{
	wp_write_under_watchdog(WP_CLEAR_REFS);
}

CASE(wp_loop_prot_none, "a PROT_NONE shared mapping made read-write by mprotect, then a write: completes or SIGBUS")
{
	wp_write_under_watchdog(WP_PROT_NONE);
}

static void madv_populate(int advice)
{
	int fd = p2p_open();
	char *p = p2p_map(fd, 2 * PAGE);
	if (p == MAP_FAILED)
		probe_fail("mmap");
	int rc = madvise(p, 2 * PAGE, advice);
	obs_errno("madvise", rc ? errno : 0);
	munmap(p, 2 * PAGE);
	close(fd);
}

CASE(madv_populate_read, "MADV_POPULATE_READ on p2pmem fails with a meaningful errno, not ENOMEM")
{
	madv_populate(MADV_POPULATE_READ);
}

CASE(mlock, "mlock() of p2pmem fails with EREMOTEIO (GUP refuses P2PDMA pages while populating); mapping and data untouched")
{
	int fd = p2p_open();
	char *p = p2p_map(fd, 2 * PAGE);
	if (p == MAP_FAILED)
		probe_fail("mmap");
	p[0] = 'm';
	p[PAGE] = 'l';
	long long before = p2p_available();
	int rc = mlock(p, 2 * PAGE);
	obs_errno("mlock", rc ? errno : 0);
	/* the failed populate leaves the mapping as it was: same pages, same data */
	obs_int("available_delta", p2p_available() - before);
	obs_bool("data_kept", touch(p, 0, 0) == 0 && touch(p + PAGE, 0, 0) == 0 && p[0] == 'm' && p[PAGE] == 'l');
	if (rc == 0)
		munlock(p, 2 * PAGE);
	munmap(p, 2 * PAGE);
	close(fd);
}

CASE(madv_populate_write, "MADV_POPULATE_WRITE on p2pmem fails with a meaningful errno, not ENOMEM")
{
	madv_populate(MADV_POPULATE_WRITE);
}
