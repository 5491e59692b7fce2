/* Allocation failures injected on the P2PDMA paths with the kernel's own fault injection (docs/behaviour.md
 * section 10): fail_page_alloc and failslab in debugfs, narrowed to the allocations made below one kernel
 * function (the stack-trace filter: require-start/require-end, from /proc/kallsyms) and, for a system call, to
 * this task (task-filter, /proc/self/make-it-fail). The kernel must unwind: the call fails cleanly, the pool
 * gets back what it lent, no reference is left behind (the next unbind returns), the next bind works. */
#define AREA "inject"
#include "lib/probe.h"

#define FAULT_DIR "/sys/kernel/debug/"

/* [start, end) of a kernel text symbol: its address and the next higher symbol's */
static int ksym_range(const char *name, unsigned long *start, unsigned long *end)
{
	FILE *f = fopen("/proc/kallsyms", "r");
	if (!f)
		return -1;
	char line[512], sym[256], type;
	unsigned long addr, want = 0, next = ~0UL;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%lx %c %255s", &addr, &type, sym) != 3)
			continue;
		if (!want && !strcmp(sym, name) && (type == 't' || type == 'T'))
			want = addr;
	}
	if (want) {
		rewind(f);
		while (fgets(line, sizeof(line), f))
			if (sscanf(line, "%lx %c %255s", &addr, &type, sym) == 3 && addr > want && addr < next)
				next = addr;
	}
	fclose(f);
	if (!want || next == ~0UL)
		return -1;
	*start = want;
	*end = next;
	return 0;
}

static void attr_write(const char *attr, const char *file, const char *value)
{
	char path[256];
	snprintf(path, sizeof(path), FAULT_DIR "%s/%s", attr, file);
	if (write_file(path, value) < 0)
		probe_fail("write %s to %s", value, path);
}

static long long attr_read(const char *attr, const char *file)
{
	char path[256];
	snprintf(path, sizeof(path), FAULT_DIR "%s/%s", attr, file);
	return read_ll(path);
}

/* fail the `nth` allocation `attr` (fail_page_alloc, failslab) sees below kernel function `below` and not below
 * `not_below` (NULL: anywhere), once; task_only: only in tasks with make-it-fail set */
static void inject_arm(const char *attr, const char *below, const char *not_below, int nth, int task_only)
{
	unsigned long start, end, rstart = 0, rend = 0;
	char v[64];
	if (ksym_range(below, &start, &end) < 0)
		probe_fail("no text symbol %s in /proc/kallsyms", below);
	if (not_below && ksym_range(not_below, &rstart, &rend) < 0)
		probe_fail("no text symbol %s in /proc/kallsyms", not_below);
	attr_write(attr, "probability", "0"); /* off while it is set up */
	attr_write(attr, "task-filter", task_only ? "Y" : "N");
	attr_write(attr, "ignore-gfp-wait", "N"); /* GFP_KERNEL allocations count too */
	if (!strcmp(attr, "fail_page_alloc"))
		attr_write(attr, "min-order", "0"); /* single pages too (page tables, the memory map): default 1 */
	attr_write(attr, "verbose", "1");         /* the FAULT_INJECTION notice, no stack dump */
	attr_write(attr, "space", "0");
	attr_write(attr, "stacktrace-depth", "32");
	snprintf(v, sizeof(v), "0x%lx", start);
	attr_write(attr, "require-start", v);
	snprintf(v, sizeof(v), "0x%lx", end);
	attr_write(attr, "require-end", v);
	snprintf(v, sizeof(v), "0x%lx", rstart);
	attr_write(attr, "reject-start", v);
	snprintf(v, sizeof(v), "0x%lx", rend);
	attr_write(attr, "reject-end", v);
	snprintf(v, sizeof(v), "%d", nth);
	attr_write(attr, "interval", v);
	attr_write(attr, "times", "1");
	attr_write(attr, "probability", "100");
}

/* off again; 1 if the armed failure was injected */
static int inject_disarm(const char *attr)
{
	attr_write(attr, "probability", "0");
	int injected = attr_read(attr, "times") == 0;
	attr_write(attr, "times", "1");
	attr_write(attr, "interval", "1");
	attr_write(attr, "require-start", "0");
	attr_write(attr, "require-end", "0xffffffffffffffff");
	attr_write(attr, "reject-start", "0");
	attr_write(attr, "reject-end", "0");
	return injected;
}

/* unbind the provider in a child; 1 if it returned within `seconds` (a leaked pgmap reference makes
 * memunmap_pages() wait forever: the child then stays, and so does the unbound provider) */
static int unbind_within(double seconds)
{
	pid_t pid = fork();
	if (pid == 0)
		_exit(p2p_unbind() < 0 ? 1 : 0);
	double deadline = now_s() + seconds;
	int st;
	while (now_s() < deadline) {
		if (waitpid(pid, &st, WNOHANG) == pid)
			return WIFEXITED(st) && WEXITSTATUS(st) == 0;
		usleep(20000);
	}
	return 0;
}

/* An mmap of 2 pages of p2pmem whose page-table allocation fails inside p2pmem_alloc_mmap(): for the first
 * page (no page table yet for its address), or for the second (the first page's table exists, the second's
 * does not: the first page is inserted, then the second fails) */
static void mmap_insert_fails(int on_second_page)
{
	int fd = p2p_open();
	long long avail = p2p_available();
	/* an anonymous area to place the mapping in, 2 MiB aligned (one page table covers 2 MiB) */
	char *area = mmap(NULL, 8 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (area == MAP_FAILED)
		probe_fail("mmap anonymous");
	char *boundary = (char *)(((uintptr_t)area + (4 << 20)) & ~((2UL << 20) - 1));
	char *at = on_second_page ? boundary - PAGE : boundary;
	boundary[-2 * PAGE] = 1; /* the page table below the boundary exists; the one above it does not */
	if (write_file("/proc/self/make-it-fail", "1") < 0)
		probe_fail("write /proc/self/make-it-fail");
	inject_arm("fail_page_alloc", "p2pmem_alloc_mmap", NULL, 1, 1);
	void *p = mmap(at, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0);
	int err = p == MAP_FAILED ? errno : 0;
	int injected = inject_disarm("fail_page_alloc");
	write_file("/proc/self/make-it-fail", "0");
	obs_errno("mmap", err);
	obs_bool("failure_injected", injected);
	obs_int("available_delta", p2p_available() - avail);
	if (p != MAP_FAILED)
		munmap(p, 2 * PAGE);
	/* the pool works as before: a mapping of the same size, touched and given back */
	volatile char *q = p2p_map(fd, 2 * PAGE);
	obs_errno("mmap_after", q == MAP_FAILED ? errno : 0);
	if (q != MAP_FAILED) {
		q[0] = 1;
		q[PAGE] = 2;
		munmap((void *)q, 2 * PAGE);
	}
	obs_int("available_restored_delta", p2p_available() - avail);
	munmap(area, 8 << 20);
	close(fd);
	int returned = unbind_within(10.0);
	obs_bool("unbind_returned_within_10s", returned);
	if (!returned)
		return; /* the provider stays unbound: the rig sees the machine changed and retires the VM */
	int rc = p2p_bind();
	obs_errno("rebind", rc < 0 ? errno : 0);
	obs_int("rebind_available_delta", rc < 0 ? -1 : p2p_available() - avail);
}

CASE(mmap_first_insert_fails, "mmap of p2pmem whose first page-table allocation fails (fail_page_alloc below p2pmem_alloc_mmap): ENOMEM, the pool whole, the next unbind returns")
{
	mmap_insert_fails(0);
}

CASE(mmap_second_insert_fails, "mmap of 2 pages of p2pmem, the first inserted, the second's page-table allocation fails: ENOMEM, the inserted page and the rest back in the pool, the next unbind returns")
{
	mmap_insert_fails(1);
}

/* the provider's NVMe controller state ("live" once the driver's reset work, which maps the CMB, is done) */
static int ctrl_live(void)
{
	char pattern[512], state[32];
	glob_t g;
	snprintf(pattern, sizeof(pattern), "%s/nvme/nvme*/state", p2p_dev);
	if (glob(pattern, 0, NULL, &g) != 0)
		return 0;
	int live = read_file(g.gl_pathv[0], state, sizeof(state)) > 0 && !strncmp(state, "live", 4);
	globfree(&g);
	return live;
}

static int bind_and_settle(void)
{
	if (write_file("/sys/bus/pci/drivers/nvme/bind", p2p_bdf) < 0)
		return -1;
	for (int t = 0; t < 400; t++) { /* 20 s */
		if (ctrl_live())
			return 0;
		usleep(50000);
	}
	return -1;
}

/* One failed allocation at bind: unbind, arm, bind (the driver's reset work maps the CMB), then a clean unbind and
 * bind. Counts what went wrong into `t`; returns 0 when the n-th such allocation was reached and failed, 1 when
 * the setup makes fewer (nothing injected), -1 when unbind or bind stopped working. */
struct bind_tally {
	long long size, avail, published;
	int injected, registered, group_left, not_restored, io_failed;
};

/* the controller works without its CMB: its submission queues fell back to host memory (nvme_alloc_sq_cmds) */
static int namespace_reads(void)
{
	char ns[128];
	if (p2p_nvme_namespace(ns, sizeof(ns)) < 0)
		return 0;
	int fd = open(ns, O_RDONLY | O_DIRECT);
	void *buf = aligned_alloc(PAGE, PAGE);
	int ok = fd >= 0 && pread(fd, buf, PAGE, 0) == (ssize_t)PAGE;
	if (fd >= 0)
		close(fd);
	free(buf);
	return ok;
}

static int bind_with_failure(const char *attr, const char *below, const char *not_below, int n, struct bind_tally *t)
{
	char path[512];
	if (!unbind_within(10.0))
		return -1;
	inject_arm(attr, below, not_below, n, 0); /* no task filter: it costs nothing here (a bind is quiet) */
	int rc = bind_and_settle();
	int injected = inject_disarm(attr);
	if (rc < 0)
		return -1;
	if (!injected)
		return 1;
	t->injected++;
	if (p2p_attr("size") > 0)
		t->registered++; /* P2P memory although an allocation of its setup failed */
	snprintf(path, sizeof(path), "%s/p2pmem", p2p_dev);
	if (access(path, F_OK) == 0)
		t->group_left++;
	if (!namespace_reads())
		t->io_failed++;
	if (!unbind_within(10.0) || p2p_bind() < 0)
		return -1;
	if (p2p_attr("size") != t->size || p2p_available() != t->avail || p2p_attr("published") != t->published)
		t->not_restored++;
	return 0;
}

static void obs_tally(const struct bind_tally *t, int stuck)
{
	obs_int("failures_injected", t->injected);
	obs_bool("unbind_and_bind_kept_working", !stuck);
	obs_int("registered_despite_failure", t->registered);
	obs_int("p2pmem_dir_left_by_failure", t->group_left);
	obs_int("not_restored_by_next_bind", t->not_restored);
	obs_int("namespace_io_failed_without_cmb", t->io_failed);
	if (!stuck && !ctrl_live())
		bind_and_settle();
}

static struct bind_tally tally_start(void)
{
	return (struct bind_tally){.size = p2p_attr("size"), .avail = p2p_available(), .published = p2p_attr("published")};
}

/* the first allocation below each kernel function of the CMB's P2P setup (functions that are not inlined into
 * pci_p2pdma_add_resource, so that the stack-trace filter sees them) */
struct bind_point {
	const char *attr, *below;
};

static void bind_fails_at(const struct bind_point *points, size_t n)
{
	struct bind_tally t = tally_start();
	int stuck = 0, missed = 0;
	for (size_t i = 0; i < n && !stuck; i++) {
		int rc = bind_with_failure(points[i].attr, points[i].below, NULL, 1, &t);
		stuck = rc < 0;
		missed += rc == 1;
	}
	obs_int("points_not_reached", missed);
	obs_tally(&t, stuck);
}

CASE(bind_setup_fails, "the CMB's P2P setup at bind, one slab allocation failing (the p2pdma state, the pool, the pgmap's bookkeeping): no P2P memory registered, the controller works without it, nothing left behind, the next bind brings it back whole")
{
	static const struct bind_point points[] = {
		{"failslab", "pci_p2pdma_add_resource"}, /* its first: the p2pdma state, before anything else exists */
		{"failslab", "gen_pool_create"},         /* the pool */
		{"failslab", "memremap_pages"},          /* the pgmap's bookkeeping */
	};
	bind_fails_at(points, sizeof(points) / sizeof(points[0]));
}

CASE(bind_pool_chunk_fails, "the CMB's P2P setup at bind, the pool's chunk failing (failslab below gen_pool_add_owner, its last allocation, with the pgmap live): no P2P memory registered, the unbind after it unwinds cleanly, the next bind brings it back whole")
{
	static const struct bind_point points[] = {{"failslab", "gen_pool_add_owner"}};
	bind_fails_at(points, 1);
}

CASE(bind_memmap_fails, "the CMB's P2P setup at bind, a page of the BAR's memory map (struct pages) failing (fail_page_alloc below sparse_add_section): no P2P memory registered, the next bind brings it back whole")
{
	static const struct bind_point points[] = {{"fail_page_alloc", "sparse_add_section"}};
	bind_fails_at(points, 1);
}

CASE(bind_direct_map_fails, "the CMB's P2P setup at bind, a page-table page of the BAR's kernel mapping failing (fail_page_alloc below init_memory_mapping): no P2P memory registered, the next bind brings it back whole")
{
	static const struct bind_point points[] = {{"fail_page_alloc", "init_memory_mapping"}};
	bind_fails_at(points, 1);
}

/* every allocation of the setup in turn, about a second each, for the nightly run, the way syzkaller sweeps a
 * system call: /proc/thread-self/fail-nth fails the n-th allocation this task makes below the filter (slab and
 * page allocations alike, in the order they come; bind runs the driver's probe in the writing task), and reads
 * back 0 once it did. memremap_pages() is left out: its allocations are the x86 memory hotplug and the pgmap's
 * page ranges, which the cases above cover (and whose x86 part would stop the sweep at a known bug). The sweep
 * reaches what those cannot single out: the p2pmem/ group (sysfs_create_group's allocations, which nvme's own
 * groups share), the devres records, the pool's chunk. */
#define SWEEP_MAX 200

static void sweep_arm(const char *attr)
{
	unsigned long start, end, rstart, rend;
	char v[64];
	if (ksym_range("pci_p2pdma_add_resource", &start, &end) < 0 || ksym_range("memremap_pages", &rstart, &rend) < 0)
		probe_fail("no pci_p2pdma_add_resource or memremap_pages in /proc/kallsyms");
	attr_write(attr, "probability", "0"); /* only fail-nth fails: the per-task count comes first */
	attr_write(attr, "task-filter", "N");
	attr_write(attr, "ignore-gfp-wait", "N");
	if (!strcmp(attr, "fail_page_alloc"))
		attr_write(attr, "min-order", "0");
	attr_write(attr, "verbose", "1");
	attr_write(attr, "stacktrace-depth", "32");
	struct { const char *file; unsigned long value; } range[] = {
		{"require-start", start}, {"require-end", end}, {"reject-start", rstart}, {"reject-end", rend}};
	for (size_t i = 0; i < 4; i++) {
		snprintf(v, sizeof(v), "0x%lx", range[i].value);
		attr_write(attr, range[i].file, v);
	}
}

/* bind with the n-th allocation of the setup failing; 1 if it failed, 0 if the setup made fewer, -1 stuck */
static int bind_failing_nth(int n)
{
	char v[32];
	snprintf(v, sizeof(v), "%d", n);
	if (write_file("/proc/thread-self/fail-nth", v) < 0)
		probe_fail("write /proc/thread-self/fail-nth");
	int rc = bind_and_settle();
	long long left = read_ll("/proc/thread-self/fail-nth");
	write_file("/proc/thread-self/fail-nth", "0");
	if (rc < 0)
		return -1;
	return left == 0;
}

CASE(bind_setup_fails_sweep, "every slab and page allocation below pci_p2pdma_add_resource at bind but memremap_pages's fails in turn (a fault-injection sweep with fail-nth, nightly): each leaves no P2P memory, nothing behind, and the next bind brings it back whole")
{
	struct bind_tally t = tally_start();
	char path[512];
	int n, stuck = 0;
	sweep_arm("failslab");
	sweep_arm("fail_page_alloc");
	for (n = 1; n <= SWEEP_MAX && !stuck; n++) {
		if (!unbind_within(10.0)) {
			stuck = 1;
			break;
		}
		int failed = bind_failing_nth(n);
		if (failed < 0) {
			stuck = 1;
			break;
		}
		if (!failed)
			break; /* the setup makes fewer than n allocations: every one was failed once */
		t.injected++;
		if (p2p_attr("size") > 0)
			t.registered++;
		snprintf(path, sizeof(path), "%s/p2pmem", p2p_dev);
		if (access(path, F_OK) == 0)
			t.group_left++;
		if (!namespace_reads())
			t.io_failed++;
		if (!unbind_within(10.0) || p2p_bind() < 0) {
			stuck = 1;
			break;
		}
		if (p2p_attr("size") != t.size || p2p_available() != t.avail || p2p_attr("published") != t.published)
			t.not_restored++;
	}
	obs_int("allocations_swept", t.injected);
	obs_bool("swept_them_all", !stuck && n <= SWEEP_MAX);
	obs_tally(&t, stuck);
}
