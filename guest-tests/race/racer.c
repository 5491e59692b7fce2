/* Guest-side race workers for `rig race` (docs/behaviour.md section 8). One scenario per run:
 *
 *   racer SCENARIO SECONDS WORKERS SEED
 *
 * Worker threads hammer p2pmem while a controller thread unbinds and rebinds the provider. Every random choice
 * comes from SEED. Progress goes to /dev/kmsg every second ("p2pdma-race: progress ..."), so the host sees it
 * on the console next to any splat; the final line on stdout is one JSON object with the counters and the
 * invariants that broke (empty list = none). The host owns the clock and the verdict.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <sys/ioctl.h>
#include <sys/wait.h>

#include "../lib/p2p.h"

static char available_path[300], nvme_ns[64];
static long long baseline;
static atomic_int stop, silent;
static long max_cycles; /* 0 = run for the time given */
static atomic_long iterations, cycles, sigbus, enomem, enodev, spurious_einval, unexpected;
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

static void *controller(void *arg)
{
	uint64_t seed = (uint64_t)(uintptr_t)arg;
	while (!atomic_load(&stop)) {
		usleep(next_rand(&seed) % 200000);
		double t0 = now_s();
		if (p2p_unbind() < 0) {
			invariant("unbind failed: %s", strerror(errno));
			break;
		}
		if (now_s() - t0 > unbind_bound_s)
			invariant("unbind took %.1f s (bound %.0f s)", now_s() - t0, unbind_bound_s);
		usleep(next_rand(&seed) % 100000);
		if (p2p_bind() < 0) {
			invariant("rebind failed: p2pmem did not come back");
			break;
		}
		long long avail = read_ll(available_path);
		if (quiet_pool && avail != baseline)
			invariant("available %lld after rebind, baseline %lld", avail, baseline);
		if (atomic_fetch_add(&cycles, 1) + 1 >= max_cycles && max_cycles)
			atomic_store(&stop, 1);
	}
	return NULL;
}

/* ------------------------------------------------------------------ workers */
static void count_mmap_error(int e)
{
	if (e == ENOMEM)
		atomic_fetch_add(&enomem, 1);
	else if (e == ENODEV || e == ENOENT)
		atomic_fetch_add(&enodev, 1);
	else if (e == EINVAL) /* the documented spurious window (section 1.3) */
		atomic_fetch_add(&spurious_einval, 1);
	else
		atomic_fetch_add(&unexpected, 1);
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

/* ------------------------------------------------------------------ main */
struct scenario {
	const char *name;
	void *(*worker)(void *);
	int unbinds;  /* the controller loops unbind/bind */
	void *(*extra)(void *);  /* one more thread of another kind */
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
	if (!glob("/sys/bus/pci/devices/*/nvme/nvme*/nvme*n1", 0, NULL, &g)) {
		for (size_t i = 0; i < g.gl_pathc; i++)
			if (!strstr(g.gl_pathv[i], p2p_bdf))
				snprintf(peer_ns, sizeof(peer_ns), "/dev/%s", strrchr(g.gl_pathv[i], '/') + 1);
		globfree(&g);
	}
	if (!strcmp(sc->name, "inflight-peer"))
		unbind_bound_s = 60.0; /* unbind legitimately waits for the slow peer's I/O */

	struct sigaction sa = {0};
	sa.sa_handler = on_fault;
	sigaction(SIGBUS, &sa, NULL);
	sigaction(SIGSEGV, &sa, NULL);

	kmsg("p2pdma-race: start scenario=%s seconds=%g workers=%d seed=%llu baseline=%lld\n", sc->name, seconds,
	     workers, (unsigned long long)seed, baseline);
	quiet_pool = sc->worker == NULL && sc->extra == NULL;
	pthread_t th[66];
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
	if (end_avail != baseline)
		invariant("available %lld at the end, baseline %lld (pages leaked or double-freed)", end_avail, baseline);
	if (atomic_load(&unexpected))
		invariant("%ld mmap calls failed with an errno the kernel must not return", atomic_load(&unexpected));
	double elapsed = now_s() - t0;
	kmsg("p2pdma-race: end scenario=%s\n", sc->name);
	printf("{\"scenario\": \"%s\", \"seconds\": %.2f, \"iterations\": %ld, \"cycles\": %ld, \"sigbus\": %ld, "
	       "\"enomem\": %ld, \"enodev\": %ld, \"spurious_einval\": %ld, \"unexpected_errno\": %ld, "
	       "\"available_end\": %lld, \"baseline\": %lld, \"broken\": [%s]}\n",
	       sc->name, elapsed, atomic_load(&iterations), atomic_load(&cycles), atomic_load(&sigbus),
	       atomic_load(&enomem), atomic_load(&enodev), atomic_load(&spurious_einval), atomic_load(&unexpected),
	       end_avail, baseline, broken);
	return 0;
}
