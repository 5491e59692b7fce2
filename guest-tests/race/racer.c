/* Guest-side race workers for `rig race` (docs/behaviour.md section 8). One scenario per run:
 *
 *   racer SCENARIO SECONDS WORKERS SEED
 *
 * Worker threads hammer p2pmem while a controller thread unbinds and rebinds the provider. Every random choice
 * comes from SEED. Progress goes to /dev/kmsg every second ("p2pdma-race: progress ..."), so the host sees it
 * on the console next to any splat; the final line on stdout is one JSON object with the counters and the
 * invariants that broke (empty list = none). The host owns the clock and the verdict.
 *
 * Built with -DREPRO_SCENARIO=... -DREPRO_SEED=... -DREPRO_SECONDS=... -DREPRO_WORKERS=... (the standalone
 * reproducer a race directory holds: rig.race.write_reproducer), it runs that schedule without arguments and
 * watches the kernel log itself: at the first report it prints "p2pdma-race: HIT ..." and exits 1.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/sysinfo.h>
#include <sys/wait.h>

#include "../lib/p2p.h"

static char available_path[300], nvme_ns[64];
static long long baseline;
static atomic_int stop, silent;
static long max_cycles; /* 0 = run for the time given */
static atomic_long iterations, cycles, sigbus;
/* how mmap() failed: ENOMEM, ENODEV/ENOENT (the pool gone), the documented spurious EINVAL, anything else */
struct mmap_errors {
	atomic_long enomem, enodev, spurious_einval, unexpected;
};
static struct mmap_errors mmap_errors;
static atomic_long unbind_us, bind_us; /* where a cycle's time goes: unbind, and bind up to p2pmem's return */
static char broken[4096];
static pthread_mutex_t broken_lock = PTHREAD_MUTEX_INITIALIZER;

static void invariant(const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&broken_lock);
	if (strlen(broken) + strlen(msg) + 8 < sizeof(broken))
		snprintf(broken + strlen(broken), sizeof(broken) - strlen(broken), "%s\"%s\"", broken[0] ? ", " : "", msg);
	pthread_mutex_unlock(&broken_lock);
	atomic_store(&stop, 1);
}

static void kmsg(const char *fmt, ...)
{
	char line[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	int fd = open("/dev/kmsg", O_WRONLY);
	if (fd >= 0) {
		if (write(fd, line, n) < 0) { /* progress is best effort */ }
		close(fd);
	}
}

static void on_term(int sig)
{
	(void)sig;
	atomic_store(&stop, 1); /* the host ends a scenario early (rig race --until-hit): finish as at the end */
}

/* xorshift per thread, seeded from the run's seed */
static uint64_t next_rand(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* ------------------------------------------------------------------ faults, per thread */
static __thread sigjmp_buf jmp;
static __thread volatile int in_touch;

static void on_fault(int sig)
{
	if (in_touch)
		siglongjmp(jmp, sig);
	signal(sig, SIG_DFL);
	raise(sig);
}

/* 0 = the access worked, else the signal */
static int touch(volatile char *p, char v)
{
	int sig = sigsetjmp(jmp, 1);
	if (sig == 0) {
		in_touch = 1;
		p[0] = v;
		(void)p[0];
	}
	in_touch = 0;
	return sig;
}

/* ------------------------------------------------------------------ controller: unbind/bind */
static double unbind_bound_s = 20.0;
static int quiet_pool; /* no workers map p2pmem: `available` must be at its baseline after every rebind */

static int bound_ms;    /* > 0: the provider stays bound this long between unbinds (else up to 40 ms, random) */
static int hold_open;   /* the controller keeps allocate open while bound: the open node lives until the unbind */

static void *controller(void *arg)
{
	uint64_t seed = (uint64_t)(uintptr_t)arg;
	while (!atomic_load(&stop)) {
		int held = -1;
		if (hold_open) {
			char path[512];
			held = p2p_memory_path(path, sizeof(path)) < 0 ? -1 : open(path, O_RDWR);
		}
		/* a random phase against the workers (whose iterations take well under a millisecond), short enough
		 * that unbind and bind, not the sleeps, take most of a cycle */
		usleep(bound_ms ? (uint64_t)bound_ms * 1000 : next_rand(&seed) % 40000);
		double t0 = now_s();
		int unbound = p2p_unbind();
		atomic_fetch_add(&unbind_us, (long)((now_s() - t0) * 1e6));
		if (held >= 0)
			close(held);
		if (unbound < 0) {
			invariant("unbind failed: %s", strerror(errno));
			break;
		}
		if (now_s() - t0 > unbind_bound_s)
			invariant("unbind took %.1f s (bound %.0f s)", now_s() - t0, unbind_bound_s);
		usleep(next_rand(&seed) % 10000);
		double t1 = now_s();
		if (p2p_bind_polling(5) < 0) {
			invariant("rebind failed: p2pmem did not come back");
			break;
		}
		atomic_fetch_add(&bind_us, (long)((now_s() - t1) * 1e6));
		long long avail = read_ll(available_path);
		if (quiet_pool && avail != baseline)
			invariant("available %lld after rebind, baseline %lld", avail, baseline);
		if (atomic_fetch_add(&cycles, 1) + 1 >= max_cycles && max_cycles)
			atomic_store(&stop, 1);
	}
	return NULL;
}

/* ------------------------------------------------------------------ workers */
static void count_mmap_error_in(struct mmap_errors *m, int e)
{
	if (e == ENOMEM)
		atomic_fetch_add(&m->enomem, 1);
	else if (e == ENODEV || e == ENOENT)
		atomic_fetch_add(&m->enodev, 1);
	else if (e == EINVAL) /* the documented spurious window (section 1.3) */
		atomic_fetch_add(&m->spurious_einval, 1);
	else
		atomic_fetch_add(&m->unexpected, 1);
}

static void count_mmap_error(int e)
{
	count_mmap_error_in(&mmap_errors, e);
}

/* P2P memory is mapped from p2pmem/allocate, or (P2PDMA_MEMORY=nvme-chardev, the seed's v3 series) from
 * /dev/nvmeN of the provider's controller, looked up at every open: N can change across unbind/bind */
static int open_pool(void)
{
	char path[512];
	if (p2p_memory_path(path, sizeof(path)) < 0) {
		errno = ENOENT;
		return -1;
	}
	return open(path, O_RDWR);
}

/* a fresh p2pmem mapping of len bytes, or NULL with the errno counted (the pool is gone while unbound) */
static char *map_pool(size_t len)
{
	int fd = open_pool();
	if (fd < 0) {
		/* /dev/nvmeN of a controller that is not live yet (probing after bind): nvme_dev_open's EWOULDBLOCK,
		 * the char device's way of saying the pool is not there */
		count_mmap_error(p2p_v3() && errno == EWOULDBLOCK ? ENODEV : errno);
		usleep(2000);
		return NULL;
	}
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	int err = errno;
	close(fd);
	if (p == MAP_FAILED) {
		count_mmap_error(err);
		return NULL;
	}
	return p;
}

/* map, touch every page, unmap; unbind in between turns touches into SIGBUS */
static void *mapper(void *arg)
{
	uint64_t seed = (uint64_t)(uintptr_t)arg;
	while (!atomic_load(&stop)) {
		size_t pages = 1 + next_rand(&seed) % 16;
		char *p = map_pool(pages * PAGE);
		if (p) {
			for (size_t i = 0; i < pages; i++)
				if (touch(p + i * PAGE, (char)i))
					atomic_fetch_add(&sigbus, 1);
			munmap(p, pages * PAGE);
		}
		atomic_fetch_add(&iterations, 1);
	}
	return NULL;
}

/* fork a child that maps and keeps touching; unbind must zap the child's copy too */
static void *forker(void *arg)
{
	uint64_t seed = (uint64_t)(uintptr_t)arg;
	while (!atomic_load(&stop)) {
		char *p = map_pool(2 * PAGE);
		if (!p)
			continue;
		pid_t pid = fork();
		if (pid == 0) {
			signal(SIGBUS, SIG_DFL);
			for (int i = 0; i < 200; i++) {
				p[i % 2 * PAGE] = (char)i;
				usleep(500);
			}
			_exit(0);
		}
		usleep(next_rand(&seed) % 50000);
		int st;
		waitpid(pid, &st, 0);
		if (WIFSIGNALED(st) && WTERMSIG(st) == SIGBUS)
			atomic_fetch_add(&sigbus, 1);
		else if (!WIFEXITED(st))
			invariant("forked child died from signal %d, not SIGBUS", WIFSIGNALED(st) ? WTERMSIG(st) : -1);
		munmap(p, 2 * PAGE);
		atomic_fetch_add(&iterations, 1);
	}
	return NULL;
}

/* keeps an fd on p2pmem/allocate open at all times (a new one before the old one closes), so the kernfs open
 * node, and the mmap count that the mappers' mmap and last close update, lives from one unbind to the next,
 * where kernfs_drain_open_files() checks that count */
static void *holder(void *arg)
{
	(void)arg;
	int held = -1;
	while (!atomic_load(&stop)) {
		int fd = open_pool();
		if (held >= 0)
			close(held);
		held = fd;
		usleep(200000);
	}
	if (held >= 0)
		close(held);
	return NULL;
}

/* aimed at the kernfs nr_mmapped race (race known issue kernfs-mmap-count-race): kernfs_fop_mmap() counts an
 * open file's first mmap under that file's own of->mutex, the last close of a mapped file uncounts it under
 * kernfs_open_file_mutex, so two first-mmaps of two files, or a first-mmap and another file's release, can
 * lose an update of the one plain counter (a single `incl` on x86: a window of a few instructions). Each worker
 * is a process of its own (threads of one process would take turns in mmap_lock, and their first-mmaps could
 * never meet), pinned to its own CPU, and opens, maps one page, closes and unmaps (the unmap's fput is the
 * release) as fast as it can, without touching the page; the controller's holder fd keeps the open node, and
 * with it a count gone wrong, alive until the next unbind, where kernfs_drain_open_files() warns. */
struct counter_share {
	atomic_int stop;
	atomic_long iterations;
	struct mmap_errors errors;
};

static atomic_int next_worker;

static void count_loop(struct counter_share *c)
{
	/* the device's directory stays across unbind/bind (only its p2pmem group goes): an openat from it keeps
	 * the path walk, and the time between two counts, short */
	int dev = p2p_v3() ? -1 : open(p2p_dev, O_PATH | O_DIRECTORY);
	while (!atomic_load(&c->stop)) {
		int fd = dev >= 0 ? openat(dev, "p2pmem/allocate", O_RDWR) : open_pool();
		char *p = fd < 0 ? MAP_FAILED : mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		int err = errno;
		if (fd >= 0)
			close(fd);
		if (p != MAP_FAILED)
			munmap(p, PAGE);
		else /* EWOULDBLOCK: /dev/nvmeN of a controller not live yet, as in map_pool() */
			count_mmap_error_in(&c->errors, p2p_v3() && err == EWOULDBLOCK ? ENODEV : err);
		if (p == MAP_FAILED)
			usleep(1000); /* unbound: the pool is back after the rebind */
		atomic_fetch_add(&c->iterations, 1);
	}
}

static void *mmap_counter(void *arg)
{
	(void)arg;
	struct counter_share *c = mmap(NULL, sizeof(*c), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (c == MAP_FAILED) {
		invariant("mmap-count: no shared page for a worker's counters");
		return NULL;
	}
	int cpu = atomic_fetch_add(&next_worker, 1) % get_nprocs();
	pid_t pid = fork();
	if (pid == 0) {
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(cpu, &set);
		sched_setaffinity(0, sizeof(set), &set);
		count_loop(c);
		_exit(0);
	}
	long seen = 0;
	while (!atomic_load(&stop)) { /* the process's iterations into the racer's progress */
		usleep(100000);
		long now = atomic_load(&c->iterations);
		atomic_fetch_add(&iterations, now - seen);
		seen = now;
	}
	atomic_store(&c->stop, 1);
	if (pid > 0)
		waitpid(pid, NULL, 0);
	atomic_fetch_add(&iterations, atomic_load(&c->iterations) - seen);
	atomic_fetch_add(&mmap_errors.enomem, atomic_load(&c->errors.enomem));
	atomic_fetch_add(&mmap_errors.enodev, atomic_load(&c->errors.enodev));
	atomic_fetch_add(&mmap_errors.spurious_einval, atomic_load(&c->errors.spurious_einval));
	atomic_fetch_add(&mmap_errors.unexpected, atomic_load(&c->errors.unexpected));
	munmap(c, sizeof(*c));
	return NULL;
}

/* readers of p2pmem/size and p2pmem/available across unbind and bind (coverage.md P1, P2): size_show() and
 * available_show() print 0 while pdev->p2pdma is NULL or its pool empty: at bind, from sysfs_create_group()
 * until pci_p2pdma_add_resource() has added the BAR (a memremap_pages() long), and at unbind, once
 * pci_p2pdma_release() has cleared pdev->p2pdma, for the synchronize_rcu() before the group's files go. A
 * reader that holds both files open and re-reads them sees 0, the pool's values, 0, then ENODEV once kernfs
 * has removed them; never anything else, never more available than size. The zeros are counted (before the
 * pool's size was read on that open file, and after it): they show that both arms ran. */
static atomic_long zeros_at_bind, teardown_zeros;
static long long pool_size;

static long long reread(int fd)
{
	char buf[64];
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0); /* offset 0: show() runs again */
	if (n < 0)
		return -errno;
	buf[n] = 0;
	return atoll(buf);
}

static void *sysfs_reader(void *arg)
{
	(void)arg;
	char size_path[320], avail_path[320];
	snprintf(size_path, sizeof(size_path), "%s/p2pmem/size", p2p_dev);
	snprintf(avail_path, sizeof(avail_path), "%s/p2pmem/available", p2p_dev);
	int fs = -1, fa = -1, seen_pool = 0;
	while (!atomic_load(&stop)) {
		if (fs < 0 || fa < 0) { /* unbound, or the files of the last bind went: the next bind's */
			seen_pool = 0;
			if (fs >= 0)
				close(fs);
			if (fa >= 0)
				close(fa);
			fs = open(size_path, O_RDONLY);
			fa = open(avail_path, O_RDONLY);
			if (fs < 0 || fa < 0)
				usleep(1000);
			continue;
		}
		long long size = reread(fs), avail = reread(fa);
		if (size == -ENODEV || avail == -ENODEV) { /* removed under the reader */
			close(fs);
			close(fa);
			fs = fa = -1;
		} else if (size < 0 || avail < 0) {
			invariant("reading p2pmem/size or available failed: %s", strerror((int)-(size < 0 ? size : avail)));
		} else if (size != pool_size && size != 0) {
			invariant("p2pmem/size read %lld: neither the pool's %lld nor the teardown's 0", size, pool_size);
		} else if (avail > pool_size) {
			invariant("p2pmem/available read %lld, more than the pool's size %lld", avail, pool_size);
		} else if (size == 0 || avail == 0) {
			atomic_fetch_add(seen_pool ? &teardown_zeros : &zeros_at_bind, 1);
		} else {
			seen_pool = 1;
		}
		atomic_fetch_add(&iterations, 1);
	}
	if (fs >= 0)
		close(fs);
	if (fa >= 0)
		close(fa);
	return NULL;
}

/* takes the whole pool the moment a rebind publishes it (coverage.md N9): nvme_probe() registers the CMB
 * (nvme_map_cmb) before it allocates its I/O submission queues from it (nvme_alloc_sq_cmds), so a process that
 * maps every page first makes pci_alloc_p2pmem() fail and the driver put its queues in host memory. Both
 * outcomes are right, and counted: `queues_in_host` (the grab came first: `available` is the whole pool once
 * the grab is released) and `queues_in_cmb`. What must hold either way: the namespace reads with its queues
 * wherever they are, and no queue entry lands in the grabbed pages (their pattern survives the I/O). */
static atomic_long queues_in_host, queues_in_cmb;
/* mmaps of a published `allocate` before the pool has memory: ENODEV while pci_p2pdma_setup() has created the
 * group but not yet published pdev->p2pdma (coverage.md P6), ENOMEM while the pool is still empty */
static atomic_long enodev_before_pool, enomem_before_pool;

static void *pool_grabber(void *arg)
{
	(void)arg;
	char alloc_path[320];
	snprintf(alloc_path, sizeof(alloc_path), "%s/p2pmem/allocate", p2p_dev);
	char *ram = aligned_alloc(PAGE, PAGE);
	while (!atomic_load(&stop)) {
		int fd = open(alloc_path, O_RDWR);
		if (fd < 0) { /* not published yet: look again very soon, the queues are allocated milliseconds later */
			usleep(200);
			continue;
		}
		long long avail = read_ll(available_path);
		if (avail <= 0) { /* the group is there, the BAR not yet: an mmap now meets the setup half done */
			char *early = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
			if (early != MAP_FAILED)
				munmap(early, PAGE); /* the memory came in between */
			else if (errno == ENODEV)
				atomic_fetch_add(&enodev_before_pool, 1);
			else if (errno == ENOMEM)
				atomic_fetch_add(&enomem_before_pool, 1);
			else
				count_mmap_error(errno);
			close(fd);
			continue;
		}
		char *p = mmap(NULL, (size_t)avail, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		close(fd);
		if (p == MAP_FAILED) {
			count_mmap_error(errno);
			while (!atomic_load(&stop) && access(alloc_path, F_OK) == 0)
				usleep(1000);
			continue;
		}
		int interrupted = 0;
		for (long long off = 0; off < avail && !interrupted; off += PAGE)
			interrupted = touch(p + off, (char)(off / PAGE + 1)) != 0; /* SIGBUS: an unbind took it back */
		char ns[64] = "";
		double asked = now_s();
		while (!interrupted && !atomic_load(&stop) && p2p_nvme_namespace(ns, sizeof(ns)) != 0) {
			if (access(alloc_path, F_OK) != 0) { /* unbound before the namespace came */
				interrupted = 1;
				break;
			}
			if (now_s() - asked > 5.0) {
				invariant("no namespace 5 s after the provider was bound (its queues failed?)");
				break;
			}
			usleep(1000);
		}
		int nsfd = ns[0] && !interrupted ? open(ns, O_RDONLY | O_DIRECT) : -1;
		if (nsfd >= 0) {
			for (int i = 0; i < 8; i++) /* a few commands through every submission queue entry path */
				if (pread(nsfd, ram, PAGE, (off_t)i * PAGE) != PAGE && errno != ENODEV && errno != EIO &&
				    errno != ENXIO)
					invariant("O_DIRECT read of %s failed: %s", ns, strerror(errno));
			close(nsfd);
		}
		for (long long off = 0; off < avail && !interrupted; off += PAGE) {
			int sig = sigsetjmp(jmp, 1);
			if (sig) {
				interrupted = 1;
				break;
			}
			in_touch = 1;
			char got = p[off];
			in_touch = 0;
			if (got != (char)(off / PAGE + 1)) {
				invariant("a page of the grabbed pool changed under its owner at +%lld (a queue in it?)", off);
				break;
			}
		}
		in_touch = 0;
		munmap(p, (size_t)avail);
		if (!interrupted) {
			long long after = read_ll(available_path);
			if (after >= 0) /* -1: unbound meanwhile */
				atomic_fetch_add(after == pool_size ? &queues_in_host : &queues_in_cmb, 1);
		}
		atomic_fetch_add(&iterations, 1);
		while (!atomic_load(&stop) && access(alloc_path, F_OK) == 0) /* one grab per bind */
			usleep(1000);
	}
	free(ram);
	return NULL;
}

/* concurrent mmap/munmap without unbind: pages must come back, and only the documented EINVAL may appear */
static void *churner(void *arg)
{
	return mapper(arg);
}

/* O_DIRECT reads from the provider's namespace into p2pmem while another thread of the same process unmaps
 * the buffer (GUP pin against zap); a checker in ANOTHER process maps fresh pages, writes its own pattern and
 * verifies that no late DMA lands in them. (Another process, because inside the racer a late pread would
 * legitimately hit a virtual range that munmap freed and a new mmap reused.) */
struct dio {
	int ns;
	char *buf;
	size_t len;
	off_t off;
	ssize_t ret;
	int err;
};

static void *dio_read_once(void *arg)
{
	struct dio *d = arg;
	d->ret = pread(d->ns, d->buf, d->len, d->off);
	d->err = d->ret < 0 ? errno : 0;
	return NULL;
}

static void *dio_reader(void *arg)
{
	uint64_t seed = (uint64_t)(uintptr_t)arg;
	int ns = open(nvme_ns, O_RDONLY | O_DIRECT);
	if (ns < 0) {
		invariant("open %s: %s", nvme_ns, strerror(errno));
		return NULL;
	}
	while (!atomic_load(&stop)) {
		struct dio d = {.ns = ns, .len = (1 + next_rand(&seed) % 8) * PAGE};
		d.off = (off_t)(next_rand(&seed) % 64) * PAGE;
		if (!(d.buf = map_pool(d.len)))
			continue;
		pthread_t t;
		pthread_create(&t, NULL, dio_read_once, &d);
		usleep(next_rand(&seed) % 2000);
		munmap(d.buf, d.len); /* either the pin wins (the I/O completes) or the zap does (EFAULT) */
		pthread_join(t, NULL);
		/* EFAULT: the zap won; EIO/ENODEV/ENXIO: the provider was being unbound */
		if (d.ret < 0 && d.err != EFAULT && d.err != EIO && d.err != ENODEV && d.err != ENXIO)
			invariant("O_DIRECT into p2pmem failed with %s", strerror(d.err));
		atomic_fetch_add(&iterations, 1);
	}
	close(ns);
	return NULL;
}

/* O_DIRECT reads from ANOTHER NVMe (slow null-co backend) into the provider's p2pmem while the controller
 * unbinds the provider: unbind must wait for the in-flight I/O (section 8.2) */
static char peer_ns[64];

static void *peer_reader(void *arg)
{
	uint64_t seed = (uint64_t)(uintptr_t)arg;
	int ns = open(peer_ns, O_RDONLY | O_DIRECT);
	if (ns < 0) {
		invariant("no peer NVMe namespace (%s): this scenario needs the switch-slow topology", peer_ns);
		return NULL;
	}
	while (!atomic_load(&stop)) {
		struct dio d = {.ns = ns, .len = (1 + next_rand(&seed) % 2) * PAGE};
		if (!(d.buf = map_pool(d.len)))
			continue;
		dio_read_once(&d);
		if (d.ret < 0 && d.err != EFAULT && d.err != EIO && d.err != ENODEV && d.err != ENXIO)
			invariant("peer O_DIRECT into p2pmem failed with %s", strerror(d.err));
		munmap(d.buf, d.len);
		atomic_fetch_add(&iterations, 1);
	}
	close(ns);
	return NULL;
}

static void *pattern_checker(void *arg)
{
	uint64_t seed = (uint64_t)(uintptr_t)arg;
	while (!atomic_load(&stop)) {
		char *p = map_pool(4 * PAGE);
		if (!p)
			continue;
		uint64_t tag = next_rand(&seed);
		for (size_t off = 0; off < 4 * PAGE; off += 8)
			*(volatile uint64_t *)(p + off) = tag ^ off;
		usleep(2000);
		for (size_t off = 0; off < 4 * PAGE; off += 8)
			if (*(volatile uint64_t *)(p + off) != (tag ^ off)) {
				invariant("data corruption: a freshly allocated p2pmem page changed under its owner at +%zu", off);
				break;
			}
		munmap(p, 4 * PAGE);
		atomic_fetch_add(&iterations, 1);
	}
	return NULL;
}

/* gup_test pins of fresh p2pmem mappings (FOLL_PCI_P2PDMA | FOLL_WRITE) against unbind, `rounds` times each:
 * a pin holds the page, so unbind must wait for the unpin, never free a pinned page. `cmd` is the gup_test
 * ioctl (it pins, then unpins); `touch_first` maps the pages before (GUP-fast only takes what PTEs hold). */
static void pin_loop(uint64_t seed, unsigned long cmd, const char *what, int touch_first, int rounds)
{
	int g = open("/sys/kernel/debug/gup_test", O_RDWR);
	if (g < 0) {
		invariant("no /sys/kernel/debug/gup_test (CONFIG_GUP_TEST)");
		return;
	}
	while (!atomic_load(&stop)) {
		size_t pages = 1 + next_rand(&seed) % 16;
		char *p = map_pool(pages * PAGE);
		if (!p)
			continue;
		for (size_t i = 0; touch_first && i < pages; i++)
			if (touch(p + i * PAGE, 1))
				break; /* SIGBUS: unbind took the pool */
		for (int round = 0; round < rounds && !atomic_load(&stop); round++) {
			/* struct gup_test (mm/gup_test.h): addr @16, size @24, nr_pages_per_call @32, gup_flags @36 */
			uint64_t gt[10] = {0};
			gt[2] = (uintptr_t)p;
			gt[3] = pages * PAGE;
			gt[4] = (touch_first ? pages : 1) | ((uint64_t)(0x400 | 0x1) << 32); /* FOLL_PCI_P2PDMA | FOLL_WRITE */
			/* pages that unbind took give EFAULT */
			if (ioctl(g, cmd, gt) < 0 && errno != EFAULT)
				invariant("%s failed with %s", what, strerror(errno));
		}
		munmap(p, pages * PAGE);
		atomic_fetch_add(&iterations, 1);
	}
	close(g);
}

/* the slow path: PIN_BASIC_TEST faults the pages in itself */
static void *pinner(void *arg)
{
	pin_loop((uint64_t)(uintptr_t)arg, 0xc0506705, "PIN_BASIC_TEST", 0, 1);
	return NULL;
}

/* GUP-fast (PIN_FAST_BENCHMARK) of freshly touched p2pmem against unbind and munmap: the review of v3 19/20
 * asked what keeps GUP-fast, which walks page tables without their locks, from taking a page that unbind or
 * munmap is freeing. Run it on the gupfast profile (SECRETMEM off), or GUP-fast hands every P2PDMA page to
 * the slow path. */
static void *fast_pinner(void *arg)
{
	pin_loop((uint64_t)(uintptr_t)arg, 0xc0506702, "PIN_FAST_BENCHMARK", 1, 8);
	return NULL;
}

/* rig self-tests of the race detectors: break the kernel on purpose, a little after the start */
static void *warn_once(void *arg)
{
	(void)arg;
	sleep(2);
	int fd = open_pool(), g = open("/sys/kernel/debug/gup_test", O_RDWR);
	char *p = fd < 0 ? MAP_FAILED : mmap(NULL, 16 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (g < 0 || p == MAP_FAILED) {
		invariant("selftest-warn could not set up gup_test");
		return NULL;
	}
	/* struct gup_test (mm/gup_test.h): addr @16, size @24, nr_pages_per_call @32, gup_flags @36 */
	uint64_t gt[10] = {0};
	gt[2] = (uintptr_t)p;
	gt[3] = 16 * PAGE;
	gt[4] = 1 | ((uint64_t)0x400 << 32); /* FOLL_PCI_P2PDMA with PIN_LONGTERM: WARN in is_valid_gup_args */
	if (ioctl(g, 0xc0506703, gt) < 0) { /* PIN_LONGTERM_BENCHMARK */ }
	while (!atomic_load(&stop))
		usleep(100000);
	munmap(p, 16 * PAGE); /* its pages back before the pool is checked: the WARN is its only fault */
	close(fd);
	close(g);
	return NULL;
}

static void *go_silent(void *arg)
{
	(void)arg;
	sleep(2);
	atomic_store(&silent, 1); /* no more progress lines: to the host, a hung guest */
	while (!atomic_load(&stop))
		usleep(100000);
	return NULL;
}

static void *panic_once(void *arg)
{
	(void)arg;
	sleep(2);
	write_file("/proc/sysrq-trigger", "c");
	return NULL;
}

/* ------------------------------------------------------------------ the standalone reproducer's own watch */
#ifdef REPRO_SCENARIO
static atomic_int report_seen;
static double repro_t0;

/* the first lines of the kernel's reports (a subset of the rig's table, rig/console.py) */
static int is_report(const char *msg)
{
	static const char *const starts[] = {"WARNING:", "BUG:", "INFO: task ", "general protection fault",
					     "Oops", "Kernel panic", "kernel BUG", "rcu: INFO:", "UBSAN:"};
	for (size_t i = 0; i < sizeof(starts) / sizeof(starts[0]); i++)
		if (!strncmp(msg, starts[i], strlen(starts[i])))
			return 1;
	return 0;
}

static void *report_watcher(void *arg)
{
	(void)arg;
	int fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK);
	if (fd < 0)
		return NULL;
	lseek(fd, 0, SEEK_END); /* only what comes after the start */
	char rec[8192];
	while (!atomic_load(&stop)) {
		ssize_t n = read(fd, rec, sizeof(rec) - 1);
		if (n < 0) {
			if (errno == EAGAIN)
				usleep(20000);
			else if (errno != EPIPE) /* EPIPE: records were overwritten, read on */
				break;
			continue;
		}
		rec[n] = 0;
		char *msg = strchr(rec, ';'); /* "prio,seq,usec,flags;text\n" */
		msg = msg ? msg + 1 : rec;
		if (is_report(msg)) {
			printf("p2pdma-race: HIT after %.1f s: %s", now_s() - repro_t0, msg);
			fflush(stdout);
			atomic_store(&report_seen, 1);
			atomic_store(&stop, 1);
		}
	}
	close(fd);
	return NULL;
}
#endif

/* ------------------------------------------------------------------ main */
struct scenario {
	const char *name;
	void *(*worker)(void *);
	int unbinds;  /* the controller loops unbind/bind */
	void *(*extra)(void *);  /* one more thread of another kind */
	int bound_ms, hold_open;  /* the controller's schedule (see controller()) */
};

static const struct scenario scenarios[] = {
	{"unbind-mapped", mapper, 1, NULL},
	{"fork-unbind", forker, 1, NULL},
	{"rebind-cycles", NULL, 1, NULL},
	{"mmap-munmap", churner, 0, NULL},
	{"munmap-odirect", dio_reader, 0, pattern_checker},
	{"odirect-unbind", dio_reader, 1, pattern_checker},
	{"gup-unbind", pinner, 1, NULL},
	{"gupfast-unbind", fast_pinner, 1, NULL},
	{"inflight-peer", peer_reader, 1, NULL},
	{"surprise-removal", mapper, 0, NULL},
	{"unbind-held-open", mapper, 1, holder},
	{"mmap-count", mmap_counter, 1, NULL, 2000, 1},
	{"sysfs-readers", sysfs_reader, 1, NULL},
	{"grab-at-bind", pool_grabber, 1, NULL, 1000, 0},
	{"selftest-warn", mapper, 0, NULL},
	{"selftest-panic", mapper, 0, NULL},
	{"selftest-hang", mapper, 0, NULL},
};

int main(int argc, char **argv)
{
	if (argc == 2 && !strcmp(argv[1], "--list")) {
		for (size_t i = 0; i < sizeof(scenarios) / sizeof(scenarios[0]); i++)
			printf("%s\n", scenarios[i].name);
		return 0;
	}
#ifdef REPRO_SCENARIO
	char *defaults[] = {argv[0], REPRO_SCENARIO, REPRO_SECONDS, REPRO_WORKERS, REPRO_SEED, NULL};
	if (argc == 1) {
		argv = defaults;
		argc = 5;
	}
	setenv("P2PDMA_MEMORY", REPRO_MEMORY, 0); /* the design of the kernel it was made on */
#endif
	if (argc != 5 && argc != 6) {
		fprintf(stderr, "usage: %s SCENARIO SECONDS WORKERS SEED [MAX_CYCLES] | --list\n", argv[0]);
		return 2;
	}
	const struct scenario *sc = NULL;
	for (size_t i = 0; i < sizeof(scenarios) / sizeof(scenarios[0]); i++)
		if (!strcmp(argv[1], scenarios[i].name))
			sc = &scenarios[i];
	if (!sc) {
		fprintf(stderr, "unknown scenario %s\n", argv[1]);
		return 2;
	}
	double seconds = atof(argv[2]);
	int workers = atoi(argv[3]);
	uint64_t seed = strtoull(argv[4], NULL, 0) | 1;
	max_cycles = argc == 6 ? atol(argv[5]) : 0;

	if (p2p_locate() < 0) {
		printf("{\"error\": \"no p2pmem provider\"}\n");
		return 0;
	}
	snprintf(available_path, sizeof(available_path), "%s/p2pmem/available", p2p_dev);
	p2p_nvme_namespace(nvme_ns, sizeof(nvme_ns));
	glob_t g;
	baseline = read_ll(available_path);
	char size_path[300];
	snprintf(size_path, sizeof(size_path), "%s/p2pmem/size", p2p_dev);
	pool_size = read_ll(size_path);
	if (!glob("/sys/bus/pci/devices/*/nvme/nvme*/nvme*n1", 0, NULL, &g)) {
		for (size_t i = 0; i < g.gl_pathc; i++)
			if (!strstr(g.gl_pathv[i], p2p_bdf))
				snprintf(peer_ns, sizeof(peer_ns), "/dev/%s", strrchr(g.gl_pathv[i], '/') + 1);
		globfree(&g);
	}
	bound_ms = sc->bound_ms;
	hold_open = sc->hold_open;
	if (!strcmp(sc->name, "inflight-peer"))
		unbind_bound_s = 60.0; /* unbind legitimately waits for the slow peer's I/O */

	struct sigaction sa = {0};
	sa.sa_handler = on_fault;
	sigaction(SIGBUS, &sa, NULL);
	sigaction(SIGSEGV, &sa, NULL);
	signal(SIGTERM, on_term);

	kmsg("p2pdma-race: start scenario=%s seconds=%g workers=%d seed=%llu baseline=%lld\n", sc->name, seconds,
	     workers, (unsigned long long)seed, baseline);
	quiet_pool = (sc->worker == NULL || sc->worker == sysfs_reader) && sc->extra == NULL;
	if (sc->worker == pool_grabber)
		workers = 1; /* one process takes the whole pool: a second would only get ENOMEM */
	pthread_t th[68];
	int n = 0;
	if (sc->worker)
		for (int i = 0; i < workers && n < 64; i++)
			pthread_create(&th[n++], NULL, sc->worker, (void *)(uintptr_t)(seed * (i + 2)));
	int checker_pipe[2] = {-1, -1};
	pid_t checker = -1;
	if (sc->extra) {
		if (pipe(checker_pipe))
			return 1;
		checker = fork();
		if (checker == 0) {
			/* its own process: a timer ends it, the pipe carries what broke */
			double end = now_s() + seconds;
			pthread_t t;
			pthread_create(&t, NULL, sc->extra, (void *)(uintptr_t)(seed * 97));
			while (!atomic_load(&stop) && now_s() < end && getppid() != 1)
				usleep(100000);
			atomic_store(&stop, 1);
			pthread_join(t, NULL);
			if (write(checker_pipe[1], broken, strlen(broken)) < 0)
				_exit(2);
			_exit(0);
		}
		close(checker_pipe[1]);
	}
	if (sc->unbinds)
		pthread_create(&th[n++], NULL, controller, (void *)(uintptr_t)(seed * 131));
	if (!strcmp(sc->name, "selftest-warn"))
		pthread_create(&th[n++], NULL, warn_once, NULL);
	if (!strcmp(sc->name, "selftest-panic"))
		pthread_create(&th[n++], NULL, panic_once, NULL);
	if (!strcmp(sc->name, "selftest-hang"))
		pthread_create(&th[n++], NULL, go_silent, NULL);
#ifdef REPRO_SCENARIO
	repro_t0 = now_s();
	pthread_create(&th[n++], NULL, report_watcher, NULL);
#endif
	double t0 = now_s(), last = t0;
	while (!atomic_load(&stop) && now_s() - t0 < seconds) {
		usleep(100000);
		if (now_s() - last >= 1.0 && !atomic_load(&silent)) {
			last = now_s();
			kmsg("p2pdma-race: progress t=%.0f iterations=%ld cycles=%ld sigbus=%ld\n", last - t0,
			     atomic_load(&iterations), atomic_load(&cycles), atomic_load(&sigbus));
		}
	}
	atomic_store(&stop, 1);
	for (int i = 0; i < n; i++)
		pthread_join(th[i], NULL);
	if (checker > 0) {
		char msg[4096] = "";
		ssize_t got = read(checker_pipe[0], msg, sizeof(msg) - 1);
		waitpid(checker, NULL, 0);
		if (got > 0) {
			msg[got] = 0;
			pthread_mutex_lock(&broken_lock);
			snprintf(broken + strlen(broken), sizeof(broken) - strlen(broken), "%s%s", broken[0] ? ", " : "", msg);
			pthread_mutex_unlock(&broken_lock);
		}
	}
	if (access(available_path, F_OK) != 0 && p2p_bind() < 0)
		invariant("the provider could not be bound again at the end");
	long long end_avail = read_ll(available_path);
	/* after grab-at-bind's last bind the queues may live in host memory: the whole pool is then available */
	if (end_avail != baseline && !(sc->worker == pool_grabber && end_avail == pool_size))
		invariant("available %lld at the end, baseline %lld (pages leaked or double-freed)", end_avail, baseline);
	if (atomic_load(&mmap_errors.unexpected))
		invariant("%ld mmap calls failed with an errno the kernel must not return",
			  atomic_load(&mmap_errors.unexpected));
	double elapsed = now_s() - t0;
	kmsg("p2pdma-race: end scenario=%s\n", sc->name);
	printf("{\"scenario\": \"%s\", \"seconds\": %.2f, \"iterations\": %ld, \"cycles\": %ld, \"sigbus\": %ld, "
	       "\"enomem\": %ld, \"enodev\": %ld, \"spurious_einval\": %ld, \"unexpected_errno\": %ld, "
	       "\"unbind_s\": %.2f, \"bind_s\": %.2f, \"zeros_at_bind\": %ld, \"teardown_zeros\": %ld, "
	       "\"queues_in_host\": %ld, \"enodev_before_pool\": %ld, \"enomem_before_pool\": %ld, "
	       "\"queues_in_cmb\": %ld, \"available_end\": %lld, \"baseline\": %lld, \"broken\": [%s]}\n",
	       sc->name, elapsed, atomic_load(&iterations), atomic_load(&cycles), atomic_load(&sigbus),
	       atomic_load(&mmap_errors.enomem), atomic_load(&mmap_errors.enodev),
	       atomic_load(&mmap_errors.spurious_einval), atomic_load(&mmap_errors.unexpected),
	       atomic_load(&unbind_us) / 1e6, atomic_load(&bind_us) / 1e6, atomic_load(&zeros_at_bind),
	       atomic_load(&teardown_zeros),
	       atomic_load(&queues_in_host), atomic_load(&enodev_before_pool), atomic_load(&enomem_before_pool),
	       atomic_load(&queues_in_cmb), end_avail, baseline, broken);
#ifdef REPRO_SCENARIO
	if (atomic_load(&report_seen))
		return 1;
	printf("p2pdma-race: no report in %.0f s%s\n", elapsed, broken[0] ? " (but an invariant broke: see above)" : "");
	return broken[0] ? 1 : 0;
#endif
	return 0;
}
