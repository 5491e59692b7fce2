/* get_user_pages on p2pmem: through /sys/kernel/debug/gup_test (CONFIG_GUP_TEST; docs/behaviour.md section 3),
 * where the benchmark ioctls report failure only through the returned size, and through the syscalls that GUP
 * user memory without FOLL_PCI_P2PDMA (section 2). */
#define AREA "gup"
#include "lib/probe.h"
#include "lib/gup_test.h"
#include <linux/futex.h>
#include <linux/io_uring.h>
#include <sys/ptrace.h>

#define NPAGES 16

/* bytes processed by one benchmark ioctl on a fresh p2pmem mapping */
static void gup_bench(unsigned long cmd, uint32_t flags)
{
	int gfd = gup_fd(), fd = p2p_open();
	char *p = p2p_map(fd, NPAGES * PAGE);
	if (p == MAP_FAILED)
		probe_fail("mmap");
	for (int i = 0; i < NPAGES; i++)
		p[i * PAGE] = 1;
	struct gup_test g = {.addr = (uintptr_t)p, .size = NPAGES * PAGE, .nr_pages_per_call = 1, .gup_flags = flags};
	int rc = ioctl(gfd, cmd, &g);
	obs_errno("ioctl", rc ? errno : 0);
	obs_int("pages", rc ? -1 : (long long)(g.size / PAGE));
	munmap(p, NPAGES * PAGE);
	close(fd);
	close(gfd);
}

CASE(gup_fast_plain, "GUP_FAST without FOLL_PCI_P2PDMA gets no page") { gup_bench(GUP_FAST_BENCHMARK, 0); }
CASE(gup_fast_p2p, "GUP_FAST with FOLL_PCI_P2PDMA gets every page") { gup_bench(GUP_FAST_BENCHMARK, FOLL_PCI_P2PDMA); }
CASE(pin_fast_plain, "PIN_FAST without FOLL_PCI_P2PDMA pins no page") { gup_bench(PIN_FAST_BENCHMARK, 0); }
CASE(pin_fast_p2p, "PIN_FAST with FOLL_PCI_P2PDMA pins every page") { gup_bench(PIN_FAST_BENCHMARK, FOLL_PCI_P2PDMA); }
CASE(gup_basic_plain, "GUP_BASIC (slow path) without FOLL_PCI_P2PDMA gets no page") { gup_bench(GUP_BASIC_TEST, 0); }
CASE(gup_basic_p2p, "GUP_BASIC with FOLL_PCI_P2PDMA gets every page") { gup_bench(GUP_BASIC_TEST, FOLL_PCI_P2PDMA); }
CASE(pin_basic_plain, "PIN_BASIC without FOLL_PCI_P2PDMA pins no page") { gup_bench(PIN_BASIC_TEST, 0); }
CASE(pin_basic_p2p_write, "PIN_BASIC with FOLL_PCI_P2PDMA|FOLL_WRITE pins every page")
{
	gup_bench(PIN_BASIC_TEST, FOLL_PCI_P2PDMA | FOLL_WRITE);
}

static void longterm(uint32_t flags)
{
	int gfd = gup_fd(), fd = p2p_open();
	char *p = p2p_map(fd, NPAGES * PAGE);
	if (p == MAP_FAILED)
		probe_fail("mmap");
	struct page_state before[GUP_TEST_MAX_PAGES_TO_DUMP], during[GUP_TEST_MAX_PAGES_TO_DUMP];
	if (dump_user_pages(gfd, p, GUP_TEST_MAX_PAGES_TO_DUMP, before) != GUP_TEST_MAX_PAGES_TO_DUMP)
		probe_fail("DUMP_USER_PAGES_TEST before the pin");
	struct pin_longterm_test t = {.addr = (uintptr_t)p, .size = NPAGES * PAGE, .flags = flags};
	int rc = ioctl(gfd, PIN_LONGTERM_TEST_START, &t);
	obs_errno("start", rc ? errno : 0);
	/* a refused pin must not leave a pin (or a reference) behind on the pages it got before failing */
	int same = dump_user_pages(gfd, p, GUP_TEST_MAX_PAGES_TO_DUMP, during) == GUP_TEST_MAX_PAGES_TO_DUMP;
	for (int i = 0; same && i < GUP_TEST_MAX_PAGES_TO_DUMP; i++)
		same = during[i].refcount == before[i].refcount;
	obs_bool("refcount_unchanged", same);
	if (rc == 0)
		ioctl(gfd, PIN_LONGTERM_TEST_STOP);
	munmap(p, NPAGES * PAGE);
	close(fd);
	close(gfd);
}

CASE(pin_longterm_read, "a long-term read pin of p2pmem is refused (EREMOTEIO) and leaves no reference behind") { longterm(0); }
CASE(pin_longterm_write, "a long-term write pin is refused by the dirty-tracking check first (EFAULT) and leaves no reference behind") { longterm(1); }

/* A pin over [RAM page, p2pmem page, RAM page, RAM page] without FOLL_PCI_P2PDMA, two pages a call: GUP-fast
 * takes the first RAM page and stops at the p2pmem page, the slow path refuses that one (-EREMOTEIO), and the call
 * returns what it pinned, 1 page (gup_fast_fallback: a partial result beats the error). gup_test then stops,
 * having walked 2 pages (`pages_walked`); an error instead of the partial result walks 0, no refusal 4. */
static void partial_pin(unsigned long cmd)
{
	int gfd = gup_fd(), fd = p2p_open();
	char *ram = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (ram == MAP_FAILED)
		probe_fail("mmap anonymous");
	char *p2p = mmap(ram + PAGE, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0);
	if (p2p == MAP_FAILED)
		probe_fail("mmap p2pmem into the middle of RAM pages");
	for (int i = 0; i < 4; i++)
		ram[i * PAGE] = 1;
	struct gup_test g = {.addr = (uintptr_t)ram, .size = 4 * PAGE, .nr_pages_per_call = 2, .gup_flags = 0};
	int rc = ioctl(gfd, cmd, &g);
	obs_errno("ioctl", rc ? errno : 0);
	obs_int("pages_walked", rc ? -1 : (long long)(g.size / PAGE));
	munmap(ram, 4 * PAGE);
	close(fd);
	close(gfd);
}

CASE(pin_fast_partial_before_p2pmem, "PIN_FAST over [RAM, p2pmem, RAM, RAM] without FOLL_PCI_P2PDMA: the pin stops at the p2pmem page and returns the 1 RAM page it got (partial result), not an error")
{
	partial_pin(PIN_FAST_BENCHMARK);
}

CASE(dump_user_pages, "DUMP_USER_PAGES_TEST with FOLL_PCI_P2PDMA dumps the page: refcount 2 (PTE + this GUP), mapcount 1")
{
	int gfd = gup_fd(), fd = p2p_open();
	char *p = p2p_map(fd, PAGE);
	if (p == MAP_FAILED)
		probe_fail("mmap");
	p[0] = 1;
	/* FOLL_GET (no pin flag in test_flags), so the dump shows exactly +1 */
	struct page_state ps;
	int got = dump_user_pages(gfd, p, 1, &ps);
	obs_errno("ioctl", got < 0 ? errno : 0);
	obs_int("pages", got);
	if (got == 1) {
		obs_int("refcount", ps.refcount);
		obs_int("mapcount", ps.mapcount);
	}
	munmap(p, PAGE);
	close(fd);
	close(gfd);
}

/* ------------------------------------------------------------------ syscalls that GUP user memory (section 2) */

/* a fresh one-page p2pmem mapping holding `word` in its first 8 bytes */
static uint64_t *p2p_word(int *pfd, uint64_t word)
{
	*pfd = p2p_open();
	uint64_t *p = p2p_map(*pfd, PAGE);
	if (p == MAP_FAILED)
		probe_fail("mmap");
	*(volatile uint64_t *)p = word;
	return p;
}

CASE(io_uring_register_buffers, "IORING_REGISTER_BUFFERS (long-term write pin) of p2pmem is refused with EFAULT; RAM registers")
{
	struct io_uring_params prm = {0};
	int rfd = syscall(SYS_io_uring_setup, 1, &prm);
	if (rfd < 0) {
		if (errno == ENOSYS)
			probe_skip("no io_uring in this kernel (CONFIG_IO_URING off)");
		probe_fail("io_uring_setup");
	}
	/* control: the same registration of a RAM page works, so the errno below is about p2pmem */
	void *ram = aligned_alloc(PAGE, PAGE);
	struct iovec iv = {ram, PAGE};
	long rc = syscall(SYS_io_uring_register, rfd, IORING_REGISTER_BUFFERS, &iv, 1);
	obs_errno("register_ram", rc < 0 ? errno : 0);
	if (rc == 0)
		syscall(SYS_io_uring_register, rfd, IORING_UNREGISTER_BUFFERS, NULL, 0);
	int fd;
	uint64_t *p = p2p_word(&fd, 1);
	iv = (struct iovec){p, PAGE};
	rc = syscall(SYS_io_uring_register, rfd, IORING_REGISTER_BUFFERS, &iv, 1);
	obs_errno("register_p2pmem", rc < 0 ? errno : 0);
	if (rc == 0)
		syscall(SYS_io_uring_register, rfd, IORING_UNREGISTER_BUFFERS, NULL, 0);
	close(rfd);
	munmap(p, PAGE);
	close(fd);
	free(ram);
}

CASE(vmsplice_to_pipe, "vmsplice of a p2pmem buffer into a pipe is refused (EREMOTEIO: splice GUPs without FOLL_PCI_P2PDMA)")
{
	int fd, pp[2];
	uint64_t *p = p2p_word(&fd, 0x1122334455667788ULL);
	if (pipe(pp))
		probe_fail("pipe");
	struct iovec iv = {p, 64};
	ssize_t n = vmsplice(pp[1], &iv, 1, 0);
	obs_errno("vmsplice", n < 0 ? errno : 0);
	obs_int("spliced", n);
	close(pp[0]);
	close(pp[1]);
	munmap(p, PAGE);
	close(fd);
}

CASE(vmsplice_from_pipe, "vmsplice from a pipe into a p2pmem buffer copies the bytes (copy_to_user)")
{
	int fd, pp[2];
	uint64_t *p = p2p_word(&fd, 0);
	if (pipe(pp) || write(pp[1], "hello", 5) != 5)
		probe_fail("pipe");
	struct iovec iv = {p, 5};
	ssize_t n = vmsplice(pp[0], &iv, 1, 0);
	obs_errno("vmsplice", n < 0 ? errno : 0);
	obs_int("bytes", n);
	obs_bool("data_match", n == 5 && !memcmp((void *)p, "hello", 5));
	close(pp[0]);
	close(pp[1]);
	munmap(p, PAGE);
	close(fd);
}

/* FUTEX_WAIT on a p2pmem word whose value matches, with a 50 ms timeout: ETIMEDOUT means the wait really ran */
static void futex_wait_on_p2pmem(int op)
{
	int fd;
	uint64_t *p = p2p_word(&fd, 7);
	struct timespec ts = {0, 50 * 1000 * 1000};
	long rc = syscall(SYS_futex, (uint32_t *)p, op, 7, &ts, NULL, 0);
	obs_errno("futex_wait", rc < 0 ? errno : 0);
	munmap(p, PAGE);
	close(fd);
}

CASE(futex_shared, "a shared FUTEX_WAIT on a p2pmem word is refused (EREMOTEIO: the futex key needs GUP)")
{
	futex_wait_on_p2pmem(FUTEX_WAIT);
}

CASE(futex_private, "FUTEX_WAIT_PRIVATE on a p2pmem word waits and times out (ETIMEDOUT: no GUP for private keys)")
{
	futex_wait_on_p2pmem(FUTEX_WAIT_PRIVATE);
}

/* process_vm_readv (local <- remote) or process_vm_writev (local -> remote) on this process itself;
 * `remote_p2p` says which iovec is the p2pmem buffer, the other is RAM */
static void process_vm(int write, int remote_p2p)
{
	int fd;
	volatile char *p = (volatile char *)p2p_word(&fd, 0);
	char ram[64];
	for (int i = 0; i < 64; i++) {
		ram[i] = (char)(1 + i);
		p[i] = (char)(100 + i);
	}
	struct iovec r = {ram, 64}, q = {(void *)p, 64};
	struct iovec *local = remote_p2p ? &r : &q, *remote = remote_p2p ? &q : &r;
	/* raw syscalls: glibc declares these in <sys/uio.h>, which clashes with <linux/fs.h> (RWF_*) */
	ssize_t n = syscall(write ? SYS_process_vm_writev : SYS_process_vm_readv, getpid(), local, 1UL, remote, 1UL,
			    0UL);
	if (n < 0 && errno == ENOSYS)
		probe_skip("no process_vm_readv/writev (CONFIG_CROSS_MEMORY_ATTACH off)");
	obs_errno("result", n < 0 ? errno : 0);
	obs_int("bytes", n);
	/* the destination (local for readv, remote for writev) must now hold the source's bytes */
	int dst_is_p2p = write == remote_p2p;
	volatile char *dst = dst_is_p2p ? p : ram;
	int copied = n == 64;
	for (int i = 0; i < 64; i++)
		copied &= dst[i] == (char)((dst_is_p2p ? 1 : 100) + i);
	obs_bool("data_copied", copied);
	munmap((void *)p, PAGE);
	close(fd);
}

CASE(process_vm_readv_remote_p2pmem, "process_vm_readv with the remote iovec in p2pmem fails (EFAULT: the remote pin is refused)")
{
	process_vm(0, 1);
}

CASE(process_vm_readv_local_p2pmem, "process_vm_readv with the local iovec in p2pmem copies 64 bytes (copy_to_user)")
{
	process_vm(0, 0);
}

CASE(process_vm_writev_remote_p2pmem, "process_vm_writev with the remote iovec in p2pmem fails (EFAULT: the remote pin is refused)")
{
	process_vm(1, 1);
}

/* /proc/self/mem: GUP fails, then kernfs' vm_ops->access has nothing to call -> 0 bytes -> EIO */
static void proc_mem(int write)
{
	static volatile uint64_t ram_word = 0x55aa55aa55aa55aaULL;
	int fd, mfd = open("/proc/self/mem", O_RDWR);
	if (mfd < 0)
		probe_fail("open /proc/self/mem");
	uint64_t *p = p2p_word(&fd, 0x1122334455667788ULL), v = 0x0102030405060708ULL;
	/* control: the same access to a RAM word works */
	ssize_t n = write ? pwrite(mfd, &v, 8, (off_t)(uintptr_t)&ram_word) : pread(mfd, &v, 8, (off_t)(uintptr_t)&ram_word);
	obs_int("ram_bytes", n);
	v = 0x0102030405060708ULL;
	n = write ? pwrite(mfd, &v, 8, (off_t)(uintptr_t)p) : pread(mfd, &v, 8, (off_t)(uintptr_t)p);
	obs_errno("p2pmem", n < 0 ? errno : 0);
	obs_int("p2pmem_bytes", n);
	if (write)
		obs_bool("p2pmem_unchanged", *(volatile uint64_t *)p == 0x1122334455667788ULL);
	close(mfd);
	munmap(p, PAGE);
	close(fd);
}

CASE(proc_mem_pread, "pread of /proc/self/mem at a p2pmem address fails with EIO (RAM works)") { proc_mem(0); }
CASE(proc_mem_pwrite, "pwrite of /proc/self/mem at a p2pmem address fails with EIO and writes nothing (RAM works)") { proc_mem(1); }

/* a forked child stopped under ptrace; it shares the parent's p2pmem mapping (copied PTEs) */
static pid_t traced_child(void)
{
	pid_t pid = fork();
	if (pid == 0) {
		ptrace(PTRACE_TRACEME, 0, NULL, NULL);
		raise(SIGSTOP);
		_exit(0);
	}
	int st;
	if (waitpid(pid, &st, 0) != pid || !WIFSTOPPED(st))
		probe_fail("the child did not stop under ptrace");
	return pid;
}

static void ptrace_word(int poke)
{
	static volatile long ram_word = 0x55aa;
	int fd;
	uint64_t *p = p2p_word(&fd, 0x1122334455667788ULL);
	pid_t pid = traced_child();
	/* control: the child's RAM word is readable/writable through ptrace */
	errno = 0;
	long v = poke ? ptrace(PTRACE_POKEDATA, pid, (void *)&ram_word, (void *)0x66bbL)
		      : ptrace(PTRACE_PEEKDATA, pid, (void *)&ram_word, NULL);
	obs_bool("ram_ok", errno == 0 && (poke ? v == 0 : v == 0x55aa));
	errno = 0;
	v = poke ? ptrace(PTRACE_POKEDATA, pid, (void *)p, (void *)0x66bbL) : ptrace(PTRACE_PEEKDATA, pid, (void *)p, NULL);
	obs_errno("p2pmem", errno);
	/* the child's page is the parent's page: a POKE that got through would show here */
	if (poke)
		obs_bool("p2pmem_unchanged", *(volatile uint64_t *)p == 0x1122334455667788ULL);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	munmap(p, PAGE);
	close(fd);
}

CASE(ptrace_peekdata, "PTRACE_PEEKDATA of a traced child's p2pmem address fails with EIO (RAM works)") { ptrace_word(0); }
CASE(ptrace_pokedata, "PTRACE_POKEDATA to a traced child's p2pmem address fails with EIO and writes nothing (RAM works)") { ptrace_word(1); }

/* ------------------------------------------------------------------ what GUP-fast itself did (section 2, 3)
 *
 * get/pin_user_pages_fast() first try GUP-fast (lockless, no VMA) and hand what it could not take to the slow
 * path with FOLL_TOUCH added (gup_fast_fallback). The two leave different marks on a page whose PTE is clean:
 * the slow path's follow_page_pte() sets PG_dirty for a FOLL_WRITE grab (FOLL_TOUCH), GUP-fast never touches
 * the page flags. So after a FOLL_WRITE grab of clean pages, dump_page() tells which path served each page.
 * With CONFIG_SECRETMEM (the default profile) gup_fast_folio_allowed() refuses every P2PDMA page (order 0,
 * mapping NULL) and the slow path serves them all; without it (profile gupfast) GUP-fast keeps them. */

#define FP GUP_TEST_MAX_PAGES_TO_DUMP

/* FP mapped p2pmem pages at the top of the pool (first-fit genalloc: the pages earlier cases used least), never
 * written through this mapping (clean PTEs), whose struct pages have PG_dirty clear. PG_dirty is never cleared
 * on a P2PDMA page once set (a dirty PTE zapped at munmap sets it), so if these pages are dirty the provider is
 * rebound: memremap_pages() initialises fresh struct pages. */
static char *clean_pages(int *pfd, int gfd, struct page_state *ps)
{
	int rebound = 0;
	for (;;) {
		*pfd = p2p_open();
		size_t len = (size_t)p2p_available() & ~(PAGE - 1);
		char *p = len >= FP * PAGE ? p2p_map(*pfd, len) : MAP_FAILED;
		if (p != MAP_FAILED) {
			munmap(p, len - FP * PAGE);
			p += len - FP * PAGE;
		} else if ((p = p2p_map(*pfd, FP * PAGE)) == MAP_FAILED) {
			probe_fail("mmap %lu pages", FP);
		}
		if (dump_user_pages(gfd, p, FP, ps) != FP)
			probe_fail("DUMP_USER_PAGES_TEST of %lu fresh p2pmem pages", FP);
		int dirty = 0;
		for (int i = 0; i < (int)FP; i++)
			dirty += ps[i].dirty != 0;
		if (!dirty || rebound) {
			obs_bool("clean_before", !dirty);
			obs_bool("rebound", rebound);
			return p;
		}
		munmap(p, FP * PAGE);
		close(*pfd);
		if (p2p_unbind() < 0 || p2p_bind() < 0)
			probe_fail("rebind %s for fresh struct pages", p2p_bdf);
		rebound = 1;
	}
}

/* one get/pin_user_pages_fast() call of FP clean pages with FOLL_WRITE (+ `flags`), then which path served them,
 * and whether the put/unpin gave back exactly what the grab took */
static void fast_path(unsigned long cmd, uint32_t flags, int report_path)
{
	int gfd = gup_fd(), fd;
	struct page_state before[FP], after[FP];
	char *p = clean_pages(&fd, gfd, before);
	long long avail = p2p_available();
	struct gup_test g = {.addr = (uintptr_t)p, .size = FP * PAGE, .nr_pages_per_call = FP,
			     .gup_flags = flags | FOLL_WRITE};
	int rc = ioctl(gfd, cmd, &g);
	obs_errno("ioctl", rc ? errno : 0);
	long pages = rc ? -1 : (long)(g.size / PAGE);
	obs_int("pages", pages);
	if (dump_user_pages(gfd, p, FP, after) != FP)
		probe_fail("DUMP_USER_PAGES_TEST after the grab");
	int dirtied = 0, restored = 1;
	for (int i = 0; i < (int)FP; i++) {
		dirtied += after[i].dirty == 1;
		restored &= after[i].refcount == before[i].refcount && after[i].mapcount == before[i].mapcount;
	}
	obs_int("dirtied", dirtied);
	if (report_path) {
		const char *by = pages <= 0 ? "none" : dirtied == 0 ? "fast" : dirtied == pages ? "slow" : "mixed";
		obs_str("served_by", by);
		int secretmem = has_secretmem();
		obs_bool("secretmem", secretmem);
		/* the profile-independent fact: GUP-fast kept the pages exactly when the kernel lets it (no SECRETMEM) */
		if (flags & FOLL_PCI_P2PDMA)
			obs_bool("path_matches_config", !strcmp(by, secretmem ? "slow" : "fast"));
	}
	obs_int("refcount_before", before[0].refcount);
	obs_int("refcount_after", after[0].refcount);
	obs_bool("refcount_restored", restored);
	obs_int("available_delta", p2p_available() - avail);
	munmap(p, FP * PAGE);
	close(fd);
	close(gfd);
}

CASE(gup_fast_path_p2p, "GUP_FAST with FOLL_PCI_P2PDMA|FOLL_WRITE gets every page, from GUP-fast itself when SECRETMEM is off, and puts back every reference")
{
	fast_path(GUP_FAST_BENCHMARK, FOLL_PCI_P2PDMA, 1);
}

CASE(pin_fast_path_p2p, "PIN_FAST with FOLL_PCI_P2PDMA|FOLL_WRITE pins every page, from GUP-fast itself when SECRETMEM is off; unpin restores the refcounts")
{
	fast_path(PIN_FAST_BENCHMARK, FOLL_PCI_P2PDMA, 1);
}

CASE(gup_fast_path_plain, "GUP_FAST with FOLL_WRITE but without FOLL_PCI_P2PDMA: neither GUP-fast nor the slow path takes a page (none dirtied, refcounts unchanged)")
{
	fast_path(GUP_FAST_BENCHMARK, 0, 1);
}

CASE(pin_fast_path_plain, "PIN_FAST with FOLL_WRITE but without FOLL_PCI_P2PDMA: neither GUP-fast nor the slow path pins a page (none dirtied, refcounts unchanged)")
{
	fast_path(PIN_FAST_BENCHMARK, 0, 1);
}

CASE(pin_basic_unpin_refcount, "PIN_BASIC (slow path) with FOLL_PCI_P2PDMA|FOLL_WRITE pins every page and unpin gives the refcounts back exactly")
{
	fast_path(PIN_BASIC_TEST, FOLL_PCI_P2PDMA, 0); /* pin_user_pages(): no FOLL_TOUCH, so no PG_dirty mark */
}

/* ------------------------------------------------------------------ FOLL_LONGTERM with FOLL_PCI_P2PDMA (section 2, 8.10) */

CASE(pin_longterm_p2p_refused, "PIN_LONGTERM_BENCHMARK with FOLL_PCI_P2PDMA is refused by is_valid_gup_args (WARN once per boot): nothing pinned, refcounts unchanged")
{
	int gfd = gup_fd(), fd = p2p_open();
	char *p = p2p_map(fd, FP * PAGE);
	if (p == MAP_FAILED)
		probe_fail("mmap");
	for (int i = 0; i < (int)FP; i++)
		p[i * PAGE] = (char)i;
	struct page_state before[FP], after[FP];
	if (dump_user_pages(gfd, p, FP, before) != FP)
		probe_fail("DUMP_USER_PAGES_TEST before the pin");
	/* PIN_LONGTERM_BENCHMARK ORs FOLL_LONGTERM into these flags; pin_user_pages() refuses the pair up front */
	struct gup_test g = {.addr = (uintptr_t)p, .size = FP * PAGE, .nr_pages_per_call = 1,
			     .gup_flags = FOLL_PCI_P2PDMA};
	int rc = ioctl(gfd, PIN_LONGTERM_BENCHMARK, &g);
	obs_errno("ioctl", rc ? errno : 0);
	obs_int("pages", rc ? -1 : (long long)(g.size / PAGE));
	if (dump_user_pages(gfd, p, FP, after) != FP)
		probe_fail("DUMP_USER_PAGES_TEST after the pin");
	int restored = 1;
	for (int i = 0; i < (int)FP; i++)
		restored &= after[i].refcount == before[i].refcount;
	obs_bool("refcount_restored", restored);
	int data = 1;
	for (int i = 0; i < (int)FP; i++)
		data &= p[i * PAGE] == (char)i;
	obs_bool("data_kept", data);
	munmap(p, FP * PAGE);
	close(fd);
	close(gfd);
}

/* ------------------------------------------------------------------ read-only shared mappings (section 1.2, 2) */

CASE(readonly_shared_write_pin, "a PROT_READ MAP_SHARED p2pmem mapping: a FOLL_WRITE pin gets no page (EFAULT in check_vma_flags), a read pin gets every page, refcounts unchanged")
{
	int gfd = gup_fd(), fd = p2p_open();
	char *p = mmap(NULL, FP * PAGE, PROT_READ, MAP_SHARED, fd, 0);
	obs_errno("mmap", p == MAP_FAILED ? errno : 0);
	if (p == MAP_FAILED)
		return;
	struct page_state before[FP], after[FP];
	if (dump_user_pages(gfd, p, FP, before) != FP)
		probe_fail("DUMP_USER_PAGES_TEST before the pins");
	struct gup_test g = {.addr = (uintptr_t)p, .size = FP * PAGE, .nr_pages_per_call = 1,
			     .gup_flags = FOLL_PCI_P2PDMA | FOLL_WRITE};
	int rc = ioctl(gfd, PIN_BASIC_TEST, &g);
	obs_int("write_pin_pages", rc ? -1 : (long long)(g.size / PAGE));
	g = (struct gup_test){.addr = (uintptr_t)p, .size = FP * PAGE, .nr_pages_per_call = 1,
			      .gup_flags = FOLL_PCI_P2PDMA};
	rc = ioctl(gfd, PIN_BASIC_TEST, &g);
	obs_int("read_pin_pages", rc ? -1 : (long long)(g.size / PAGE));
	if (dump_user_pages(gfd, p, FP, after) != FP)
		probe_fail("DUMP_USER_PAGES_TEST after the pins");
	int restored = 1, dirtied = 0;
	for (int i = 0; i < (int)FP; i++) {
		restored &= after[i].refcount == before[i].refcount;
		dirtied += after[i].dirty == 1 && before[i].dirty == 0;
	}
	obs_bool("refcount_restored", restored);
	obs_int("newly_dirty", dirtied);
	munmap(p, FP * PAGE);
	close(fd);
	close(gfd);
}
