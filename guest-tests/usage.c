/* The ways a program uses p2pmem/allocate, beyond one open and one mapping (docs/behaviour.md section 1.6): how
 * the file is opened and mapped, how fds and mappings are shared (dup, fork, threads, SCM_RIGHTS), and in which
 * order they go away, also across an unbind. Each case is judged by the kernel's state afterwards: `available`
 * back to its value, unbind returning, no kernel report (kernfs counts the mmapped open files of a node and
 * warns at unbind when the count is off). */
#define AREA "usage"
#include "lib/probe.h"
#include <pthread.h>
#include <sys/socket.h>

static void unbind_rebind(long long avail)
{
	double t0 = now_s();
	int rc = p2p_unbind();
	obs_errno("unbind", rc < 0 ? errno : 0);
	obs_bool("unbind_returned_within_10s", now_s() - t0 < 10.0);
	rc = p2p_bind();
	obs_errno("rebind", rc < 0 ? errno : 0);
	obs_int("rebind_available_delta", rc < 0 ? -1 : p2p_available() - avail);
}

static int open_memory(int flags)
{
	char path[512];
	if (p2p_memory_path(path, sizeof(path)) < 0)
		probe_fail("no P2P memory file for %s", p2p_bdf);
	int fd = open(path, flags);
	if (fd < 0)
		probe_fail("open %s", path);
	return fd;
}

CASE(rdonly_fd_rw_map, "a file opened read-only cannot be mapped writable and shared: EACCES, nothing taken from the pool")
{
	int fd = open_memory(O_RDONLY);
	long long avail = p2p_available();
	void *p = p2p_map(fd, PAGE);
	obs_errno("mmap", p == MAP_FAILED ? errno : 0);
	obs_int("available_delta", p2p_available() - avail);
	if (p != MAP_FAILED)
		munmap(p, PAGE);
	close(fd);
}

CASE(rdonly_fd_ro_map, "read-only fd, PROT_READ shared mapping: pages taken and readable; mprotect to writable refused (EACCES); munmap gives them back")
{
	int fd = open_memory(O_RDONLY);
	long long avail = p2p_available();
	volatile char *p = mmap(NULL, 2 * PAGE, PROT_READ, MAP_SHARED, fd, 0);
	obs_errno("mmap", p == MAP_FAILED ? errno : 0);
	if (p == MAP_FAILED)
		return;
	obs_int("available_drop", avail - p2p_available());
	obs_str("read", signame(touch(p, 0, 0)));
	obs_errno("mprotect_rw", mprotect((void *)p, 2 * PAGE, PROT_READ | PROT_WRITE) < 0 ? errno : 0);
	obs_str("write", signame(touch(p, 1, 1)));
	munmap((void *)p, 2 * PAGE);
	obs_int("available_restored_delta", p2p_available() - avail);
	close(fd);
}

CASE(wronly_fd_map, "a file opened write-only cannot be mapped at all (mmap needs read access): EACCES")
{
	int fd = open_memory(O_WRONLY);
	long long avail = p2p_available();
	void *p = mmap(NULL, PAGE, PROT_WRITE, MAP_SHARED, fd, 0);
	obs_errno("mmap", p == MAP_FAILED ? errno : 0);
	obs_int("available_delta", p2p_available() - avail);
	if (p != MAP_FAILED)
		munmap(p, PAGE);
	close(fd);
}

CASE(prot_none_map, "a PROT_NONE shared mapping takes its pages at mmap; an access is SIGSEGV; munmap gives them back (the write after mprotect: fault.wp_loop_prot_none)")
{
	int fd = open_memory(O_RDWR);
	long long avail = p2p_available();
	volatile char *p = mmap(NULL, PAGE, PROT_NONE, MAP_SHARED, fd, 0);
	obs_errno("mmap", p == MAP_FAILED ? errno : 0);
	if (p == MAP_FAILED)
		return;
	obs_int("available_drop", avail - p2p_available());
	obs_str("access_none", signame(touch(p, 0, 0)));
	munmap((void *)p, PAGE);
	obs_int("available_restored_delta", p2p_available() - avail);
	close(fd);
}

CASE(one_fd_two_maps, "one fd mapped twice: two separate allocations (different pages, own data); the fd closed first, then each mapping unmapped; unbind then returns and the pool is whole")
{
	int fd = open_memory(O_RDWR);
	long long avail = p2p_available();
	volatile char *a = p2p_map(fd, PAGE), *b = p2p_map(fd, PAGE);
	if (a == MAP_FAILED || b == MAP_FAILED)
		probe_fail("mmap");
	a[0] = 1;
	b[0] = 2;
	obs_int("available_drop", avail - p2p_available());
	obs_bool("separate_pages", a[0] == 1 && b[0] == 2);
	close(fd);
	munmap((void *)a, PAGE);
	munmap((void *)b, PAGE);
	obs_int("available_restored_delta", p2p_available() - avail);
	unbind_rebind(avail);
}

CASE(dup_fd_map, "mapping through a dup()ed fd after closing the original: works; both closed before munmap; unbind returns, pool whole")
{
	int fd = open_memory(O_RDWR);
	long long avail = p2p_available();
	int fd2 = dup(fd);
	close(fd);
	volatile char *p = p2p_map(fd2, PAGE);
	obs_errno("mmap", p == MAP_FAILED ? errno : 0);
	if (p == MAP_FAILED)
		return;
	p[0] = 7;
	close(fd2);
	obs_bool("readback_ok", p[0] == 7);
	munmap((void *)p, PAGE);
	obs_int("available_restored_delta", p2p_available() - avail);
	unbind_rebind(avail);
}

struct thread_map {
	int fd;
	volatile char *p;
};

static void *map_in_thread(void *arg)
{
	struct thread_map *t = arg;
	t->p = p2p_map(t->fd, 2 * PAGE);
	if (t->p != MAP_FAILED)
		t->p[0] = 9;
	return NULL;
}

static void *unmap_in_thread(void *arg)
{
	struct thread_map *t = arg;
	munmap((void *)t->p, 2 * PAGE);
	return NULL;
}

CASE(threads_map_unmap, "one thread maps and writes, another reads, a third unmaps: one allocation, given back once")
{
	int fd = open_memory(O_RDWR);
	long long avail = p2p_available();
	struct thread_map t = {.fd = fd};
	pthread_t th;
	pthread_create(&th, NULL, map_in_thread, &t);
	pthread_join(th, NULL);
	if (t.p == MAP_FAILED)
		probe_fail("mmap in a thread");
	obs_int("available_drop", avail - p2p_available());
	obs_bool("other_thread_reads", t.p[0] == 9);
	pthread_create(&th, NULL, unmap_in_thread, &t);
	pthread_join(th, NULL);
	obs_int("available_restored_delta", p2p_available() - avail);
	close(fd);
}

CASE(fd_passed_scm_rights, "an fd passed to another process over a unix socket (SCM_RIGHTS), mapped there; the process exits without munmap or close: its pages come back")
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
		probe_fail("socketpair");
	long long avail = p2p_available();
	pid_t pid = fork();
	if (pid == 0) {
		char c, ctl[CMSG_SPACE(sizeof(int))];
		struct iovec iov = {&c, 1};
		struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof(ctl)};
		if (recvmsg(sv[1], &msg, 0) != 1)
			_exit(2);
		int fd = *(int *)CMSG_DATA(CMSG_FIRSTHDR(&msg));
		volatile char *p = p2p_map(fd, 4 * PAGE);
		if (p == MAP_FAILED)
			_exit(3);
		p[0] = 1;
		char done = 'm';
		if (write(sv[1], &done, 1) != 1 || read(sv[1], &done, 1) != 1)
			_exit(4);
		_exit(0); /* no munmap, no close */
	}
	int fd = open_memory(O_RDWR);
	char c = 'f', ctl[CMSG_SPACE(sizeof(int))];
	struct iovec iov = {&c, 1};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof(ctl)};
	struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	*(int *)CMSG_DATA(cm) = fd;
	if (sendmsg(sv[0], &msg, 0) != 1)
		probe_fail("sendmsg");
	close(fd);
	int st;
	if (read(sv[0], &c, 1) == 1 && c == 'm')
		obs_int("available_drop_while_child_maps", avail - p2p_available());
	if (write(sv[0], &c, 1) != 1)
		probe_fail("write to the child");
	waitpid(pid, &st, 0);
	obs_int("child_exit", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	obs_int("available_restored_delta", p2p_available() - avail);
}

CASE(mapping_outlives_fd_across_unbind, "the fd closed, the mapping kept across unbind: unbind returns, the mapping SIGBUSes, munmap after unbind is clean, rebind gives the whole pool")
{
	int fd = open_memory(O_RDWR);
	long long avail = p2p_available();
	volatile char *p = p2p_map(fd, 2 * PAGE);
	if (p == MAP_FAILED)
		probe_fail("mmap");
	p[0] = 1;
	close(fd);
	double t0 = now_s();
	int rc = p2p_unbind();
	obs_errno("unbind", rc < 0 ? errno : 0);
	obs_bool("unbind_returned_within_10s", now_s() - t0 < 10.0);
	obs_str("read_after_unbind", signame(touch(p, 0, 0)));
	obs_errno("munmap_after_unbind", munmap((void *)p, 2 * PAGE) < 0 ? errno : 0);
	rc = p2p_bind();
	obs_errno("rebind", rc < 0 ? errno : 0);
	obs_int("rebind_available_delta", rc < 0 ? -1 : p2p_available() - avail);
}

CASE(fd_outlives_mapping_across_unbind, "the mapping gone, the fd kept open across unbind: unbind returns, mmap on the old fd fails, close after rebind is clean")
{
	int fd = open_memory(O_RDWR);
	long long avail = p2p_available();
	volatile char *p = p2p_map(fd, PAGE);
	if (p == MAP_FAILED)
		probe_fail("mmap");
	p[0] = 1;
	munmap((void *)p, PAGE);
	double t0 = now_s();
	int rc = p2p_unbind();
	obs_errno("unbind", rc < 0 ? errno : 0);
	obs_bool("unbind_returned_within_10s", now_s() - t0 < 10.0);
	rc = p2p_bind();
	obs_errno("rebind", rc < 0 ? errno : 0);
	void *q = p2p_map(fd, PAGE);
	obs_errno("mmap_old_fd_after_rebind", q == MAP_FAILED ? errno : 0);
	if (q != MAP_FAILED)
		munmap(q, PAGE);
	close(fd);
	obs_int("rebind_available_delta", rc < 0 ? -1 : p2p_available() - avail);
}

CASE(child_mapping_across_unbind, "a forked child keeps the inherited mapping while the parent unmaps and closes; unbind returns, the child gets SIGBUS, exits; the pool is whole after rebind")
{
	int fd = open_memory(O_RDWR);
	long long avail = p2p_available();
	volatile char *p = p2p_map(fd, PAGE);
	if (p == MAP_FAILED)
		probe_fail("mmap");
	p[0] = 3;
	int go[2], res[2];
	if (pipe(go) || pipe(res))
		probe_fail("pipe");
	pid_t pid = fork();
	if (pid == 0) {
		char c;
		close(fd);
		if (read(go[0], &c, 1) != 1)
			_exit(1);
		int sig = touch(p, 0, 0);
		if (write(res[1], &sig, sizeof(sig)) != sizeof(sig))
			_exit(1);
		_exit(0);
	}
	munmap((void *)p, PAGE);
	close(fd);
	double t0 = now_s();
	int rc = p2p_unbind();
	obs_errno("unbind", rc < 0 ? errno : 0);
	obs_bool("unbind_returned_within_10s", now_s() - t0 < 10.0);
	int sig = -1, st;
	if (write(go[1], "x", 1) != 1 || read(res[0], &sig, sizeof(sig)) != sizeof(sig))
		sig = -1;
	waitpid(pid, &st, 0);
	obs_str("child_read_after_unbind", sig < 0 ? "child died" : signame(sig));
	rc = p2p_bind();
	obs_errno("rebind", rc < 0 ? errno : 0);
	obs_int("rebind_available_delta", rc < 0 ? -1 : p2p_available() - avail);
}
