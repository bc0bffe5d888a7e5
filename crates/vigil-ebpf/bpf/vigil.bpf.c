// SPDX-License-Identifier: GPL-2.0-only
/* Vigil sensor: kernel side. CO-RE programs on BTF tracepoints only (tp_btf):
 * they need neither tracefs nor kprobes, and tp_btf is what this kernel kind
 * accepts (fentry and LSM are refused). Every record goes to one ring buffer,
 * so records of one thread keep their order; a record that does not fit is
 * counted in `counters`, never lost silently.
 *
 * Processes: sched_process_exec (argv from the new mm, exe and cwd walked from
 * dentries), sched_process_fork, sched_process_exit (whole thread groups).
 * Files: syscalls seen at sys_enter/sys_exit, filtered by number first.
 * Network: inet_sock_set_state (TCP connect/listen), accept and UDP connect/bind. */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "vigil.h"

char LICENSE[] SEC("license") = "GPL";

#define PATH_MAX_LEN 4096
#define PATH_DEPTH 64
#define NAME_MAX_LEN 255
#define ARGV_MAX 16384
#define EV_HALF 32768 /* every write lands below EV_HALF + its length */
#define TTY_MAX 64
#define CG_MAX 128

#define AT_FDCWD -100
#define AT_REMOVEDIR 0x200
#define O_WRONLY 01
#define O_RDWR 02
#define O_CREAT 0100
#define O_TRUNC 01000
#define FMODE_WRITE 0x2
#define FMODE_CREATED 0x100000 /* 1 << 20: open() created the file */
#define S_IFMT 00170000
#define S_IFREG 0100000
#define S_IFDIR 0040000
#define SIGNAL_GROUP_EXIT 0x4
#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_CLOSE 7
#define TCP_LISTEN 10
#define PROC_SUPER_MAGIC 0x9fa0
#define SYSFS_MAGIC 0x62656572
#define CGROUP2_SUPER_MAGIC 0x63677270
#define CGROUP_SUPER_MAGIC 0x27e0eb
#define DEVPTS_SUPER_MAGIC 0x1cd1
#define DEBUGFS_MAGIC 0x64626720
#define TRACEFS_MAGIC 0x74726163
#define BPF_FS_MAGIC 0xcafe4a11
#define SECURITYFS_MAGIC 0x73636673
#define PIPEFS_MAGIC 0x50495045
#define SOCKFS_MAGIC 0x534F434B
#define ANON_INODE_FS_MAGIC 0x09041934

/* x86_64 syscall numbers (the only ABI this object is built for). */
#define NR_write 1
#define NR_open 2
#define NR_close 3
#define NR_pwrite64 18
#define NR_writev 20
#define NR_connect 42
#define NR_accept 43
#define NR_bind 49
#define NR_rename 82
#define NR_rmdir 84
#define NR_creat 85
#define NR_unlink 87
#define NR_chmod 90
#define NR_fchmod 91
#define NR_chown 92
#define NR_fchown 93
#define NR_lchown 94
#define NR_openat 257
#define NR_fchownat 260
#define NR_unlinkat 263
#define NR_renameat 264
#define NR_fchmodat 268
#define NR_accept4 288
#define NR_pwritev 296
#define NR_renameat2 316
#define NR_pwritev2 328
#define NR_openat2 437
#define NR_fchmodat2 452
#define NR_MAX 512

/* What user space sets before attaching: which sources run, and the sensor's
 * own process, whose file and network activity is never reported (its spool
 * writes would otherwise feed themselves). */
struct vg_config {
	__u32 self_tgid;
	__u32 files;
	__u32 network;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20); /* resized by the loader */
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, VG_SRC_COUNT * 2);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct vg_config);
} vg_config_map SEC(".maps");

/* Syscalls the file and network programs look at, by number (1 = yes). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, NR_MAX);
	__type(key, __u32);
	__type(value, __u8);
} interest SEC(".maps");

struct scratch {
	char ev[EV_HALF * 2];
	char path[PATH_MAX_LEN * 2];
};

/* One slot per CPU (the loader sets max_entries to the possible CPUs): a
 * per-CPU array cannot hold values this large. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch_map SEC(".maps");

/* open/openat/openat2 flags from entry to exit, per thread. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u64);
} open_flags SEC(".maps");

/* Files open for writing, (tgid << 32 | fd) -> the open file and state bits.
 * The file pointer is compared at each use: an entry left by a process that
 * exited without closing cannot speak for another file under a reused pid and fd. */
#define W_CREATED 1
#define W_WRITTEN 2
#define W_REPORTED 4
struct vg_writer {
	__u64 file;
	__u32 state;
	__u32 pad;
};
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct vg_writer);
} writers SEC(".maps");

/* TCP sockets in SYN_SENT: who connected (the handshake completes in softirq). */
struct conn_owner {
	struct vg_hdr hdr;
};
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct conn_owner);
} connecting SEC(".maps");

static __always_inline void count(__u32 src, __u32 dropped)
{
	__u32 k = src * 2 + dropped;
	__u64 *c = bpf_map_lookup_elem(&counters, &k);
	if (c)
		*c += 1;
}

static __always_inline struct vg_config *cfg(void)
{
	__u32 k = 0;
	return bpf_map_lookup_elem(&vg_config_map, &k);
}

static __always_inline struct scratch *scratch(void)
{
	__u32 k = bpf_get_smp_processor_id();
	return bpf_map_lookup_elem(&scratch_map, &k);
}

static __always_inline int emit(struct scratch *s, __u32 size, __u32 src)
{
	if (size < sizeof(struct vg_hdr) || size > EV_HALF)
		return -1;
	((struct vg_hdr *)s->ev)->size = size;
	if (bpf_ringbuf_output(&events, s->ev, size, 0)) {
		count(src, 1);
		return -1;
	}
	count(src, 0);
	return 0;
}

/* Identity of a task into a header. */
static __always_inline void fill_hdr(struct vg_hdr *h, struct task_struct *t, __u16 kind)
{
	h->kind = kind;
	h->op = 0;
	h->size = 0;
	h->flags = 0;
	h->boot_ns = bpf_ktime_get_boot_ns();
	h->tgid = BPF_CORE_READ(t, tgid);
	h->tid = BPF_CORE_READ(t, pid);
	h->ppid = BPF_CORE_READ(t, real_parent, tgid);
	const struct cred *c = BPF_CORE_READ(t, cred);
	h->uid = BPF_CORE_READ(c, uid.val);
	h->euid = BPF_CORE_READ(c, euid.val);
	h->gid = BPF_CORE_READ(c, gid.val);
	h->egid = BPF_CORE_READ(c, egid.val);
	h->auid = (__u32)-1;
	h->ses = (__u32)-1;
	if (bpf_core_field_exists(t->loginuid)) {
		h->auid = BPF_CORE_READ(t, loginuid.val);
		h->ses = BPF_CORE_READ(t, sessionid);
	}
	h->cgroup_id = BPF_CORE_READ(t, cgroups, dfl_cgrp, kn, id);
	h->start_boottime = BPF_CORE_READ(t, group_leader, start_boottime);
	BPF_CORE_READ_STR_INTO(&h->comm, t, group_leader, comm);
}

/* Appends a string field (u16 length, bytes) read from kernel memory. */
static __always_inline __u32 put_kernel(struct scratch *s, __u32 pos, const void *src, __u32 len)
{
	if (pos > EV_HALF - 2)
		return pos;
	if (len > PATH_MAX_LEN)
		len = PATH_MAX_LEN;
	__u32 at = pos & (EV_HALF - 1);
	if (len > 0 && bpf_probe_read_kernel(&s->ev[(at + 2) & (EV_HALF - 1)], len & (PATH_MAX_LEN * 2 - 1), src))
		len = 0;
	s->ev[at & (EV_HALF - 1)] = len & 0xff;
	s->ev[(at + 1) & (EV_HALF - 1)] = (len >> 8) & 0xff;
	return pos + 2 + len;
}

/* Appends a NUL-terminated kernel string of at most max - 1 bytes (max <= 256). */
static __always_inline __u32 put_kernel_str(struct scratch *s, __u32 pos, const char *src, __u32 max)
{
	if (pos > EV_HALF - 2)
		return pos;
	__u32 at = pos & (EV_HALF - 1);
	long n = src ? bpf_probe_read_kernel_str(&s->ev[(at + 2) & (EV_HALF - 1)], max & 0xff, src) : 0;
	__u32 len = n > 0 ? (__u32)(n - 1) : 0;
	s->ev[at & (EV_HALF - 1)] = len & 0xff;
	s->ev[(at + 1) & (EV_HALF - 1)] = 0;
	return pos + 2 + len;
}

static __always_inline __u32 put_empty(struct scratch *s, __u32 pos)
{
	return put_kernel(s, pos, 0, 0);
}

/* Appends a NUL-terminated user string (at most PATH_MAX_LEN - 1 bytes). */
static __always_inline __u32 put_user_str(struct scratch *s, __u32 pos, const char *src)
{
	if (pos > EV_HALF - 2)
		return pos;
	__u32 at = pos & (EV_HALF - 1);
	long n = bpf_probe_read_user_str(&s->ev[(at + 2) & (EV_HALF - 1)], PATH_MAX_LEN, src);
	__u32 len = n > 0 ? (__u32)(n - 1) : 0; /* without the NUL */
	s->ev[at & (EV_HALF - 1)] = len & 0xff;
	s->ev[(at + 1) & (EV_HALF - 1)] = (len >> 8) & 0xff;
	return pos + 2 + len;
}

struct walk_ctx {
	struct scratch *s;
	struct dentry *d;
	struct mount *m;
	/* The task's root: a chrooted or containerized process's paths end there,
	 * as the process itself names them. */
	struct dentry *root_d;
	struct mount *root_m;
	__u32 off;
	__u32 flags;
};

/* One step up the tree (a bpf_loop callback, so the verifier sees it once). */
static long walk_step(__u32 i, struct walk_ctx *w)
{
	struct dentry *d = w->d;
	struct mount *m = w->m;
	if (d == w->root_d && m == w->root_m)
		return 1;
	struct dentry *root = BPF_CORE_READ(m, mnt.mnt_root);
	struct dentry *parent = BPF_CORE_READ(d, d_parent);
	if (d == root || d == parent) {
		if (d != root)
			return 1; /* a detached tree: keep what we have */
		struct mount *mp = BPF_CORE_READ(m, mnt_parent);
		if (mp == m)
			return 1;
		w->d = BPF_CORE_READ(m, mnt_mountpoint);
		w->m = mp;
		return 0;
	}
	__u32 len = BPF_CORE_READ(d, d_name.len);
	const unsigned char *name = BPF_CORE_READ(d, d_name.name);
	if (len > NAME_MAX_LEN)
		len = NAME_MAX_LEN;
	__u32 off = w->off;
	if (off > PATH_MAX_LEN || len + 1 >= off) {
		w->flags |= VG_FL_PATH_TRUNC;
		return 1;
	}
	off -= len + 1;
	struct scratch *s = w->s;
	bpf_probe_read_kernel(&s->path[(off + 1) & (PATH_MAX_LEN - 1)], len & NAME_MAX_LEN, name);
	s->path[off & (PATH_MAX_LEN - 1)] = '/';
	w->off = off;
	w->d = parent;
	if (i == PATH_DEPTH - 1)
		w->flags |= VG_FL_PATH_TRUNC;
	return 0;
}

/* Walks dentries up to the current task's root (the global root unless it is
 * chrooted or in a container), crossing mounts, writing the path into
 * s->path so it ends at PATH_MAX_LEN. Returns where it starts. */
static __always_inline __u32 walk(struct scratch *s, struct dentry *d, struct vfsmount *vm, __u32 *flags)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task_btf();
	struct fs_struct *fs = BPF_CORE_READ(t, fs);
	struct walk_ctx w = {
		.s = s,
		.d = d,
		.m = container_of(vm, struct mount, mnt),
		.root_d = BPF_CORE_READ(fs, root.dentry),
		.root_m = container_of(BPF_CORE_READ(fs, root.mnt), struct mount, mnt),
		.off = PATH_MAX_LEN,
		.flags = 0,
	};
	bpf_loop(PATH_DEPTH, walk_step, &w, 0);
	*flags |= w.flags;
	__u32 off = w.off;
	if (off >= PATH_MAX_LEN) {
		off = PATH_MAX_LEN - 1;
		s->path[off & (PATH_MAX_LEN - 1)] = '/';
	}
	return off;
}

static __always_inline __u32 put_path(struct scratch *s, __u32 pos, struct dentry *d, struct vfsmount *vm, __u32 *flags)
{
	__u32 off = walk(s, d, vm, flags);
	if (off >= PATH_MAX_LEN)
		return put_empty(s, pos);
	return put_kernel(s, pos, &s->path[off & (PATH_MAX_LEN - 1)], PATH_MAX_LEN - off);
}

static __always_inline struct file *fd_file(struct task_struct *t, int fd)
{
	if (fd < 0)
		return 0;
	struct files_struct *files = BPF_CORE_READ(t, files);
	struct fdtable *fdt = BPF_CORE_READ(files, fdt);
	unsigned int max = BPF_CORE_READ(fdt, max_fds);
	if ((unsigned int)fd >= max)
		return 0;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *f = 0;
	bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
	return f;
}

/* Pseudo filesystems nobody persists anything on. */
static __always_inline int pseudo_fs(struct file *f)
{
	unsigned long magic = BPF_CORE_READ(f, f_inode, i_sb, s_magic);
	return magic == PROC_SUPER_MAGIC || magic == SYSFS_MAGIC || magic == CGROUP2_SUPER_MAGIC ||
	       magic == CGROUP_SUPER_MAGIC || magic == DEVPTS_SUPER_MAGIC || magic == DEBUGFS_MAGIC ||
	       magic == TRACEFS_MAGIC || magic == BPF_FS_MAGIC || magic == SECURITYFS_MAGIC ||
	       magic == PIPEFS_MAGIC || magic == SOCKFS_MAGIC || magic == ANON_INODE_FS_MAGIC;
}

/* ---------------------------------------------------------------- processes */

SEC("tp_btf/sched_process_exec")
int BPF_PROG(vg_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct scratch *s = scratch();
	if (!s)
		return 0;
	struct vg_hdr *h = (struct vg_hdr *)s->ev;
	fill_hdr(h, p, VG_EXEC);
	__u32 pos = sizeof(struct vg_hdr);

	struct file *exe = BPF_CORE_READ(bprm, file);
	pos = put_path(s, pos, BPF_CORE_READ(exe, f_path.dentry), BPF_CORE_READ(exe, f_path.mnt), &h->flags);
	struct fs_struct *fs = BPF_CORE_READ(p, fs);
	pos = put_path(s, pos, BPF_CORE_READ(fs, pwd.dentry), BPF_CORE_READ(fs, pwd.mnt), &h->flags);

	/* argv: the new image's argument area, written by copy_strings moments ago. */
	struct mm_struct *mm = BPF_CORE_READ(p, mm);
	unsigned long a0 = BPF_CORE_READ(mm, arg_start), a1 = BPF_CORE_READ(mm, arg_end);
	__u32 len = 0;
	if (a1 > a0) {
		unsigned long n = a1 - a0;
		if (n > ARGV_MAX) {
			n = ARGV_MAX;
			h->flags |= VG_FL_ARGV_TRUNCATED;
		}
		len = n;
	}
	if (pos <= EV_HALF - 2) {
		__u32 at = pos & (EV_HALF - 1);
		if (len == 0 || bpf_probe_read_user(&s->ev[(at + 2) & (EV_HALF - 1)], len & (ARGV_MAX * 2 - 1), (void *)a0)) {
			len = 0;
			h->flags |= VG_FL_ARGV_MISSING;
		}
		s->ev[at & (EV_HALF - 1)] = len & 0xff;
		s->ev[(at + 1) & (EV_HALF - 1)] = (len >> 8) & 0xff;
		pos += 2 + len;
	}

	struct tty_struct *tty = BPF_CORE_READ(p, signal, tty);
	pos = put_kernel_str(s, pos, tty ? (const char *)&tty->name : 0, TTY_MAX);
	/* The cgroup's own name: container runtimes put the container id there. */
	pos = put_kernel_str(s, pos, BPF_CORE_READ(p, cgroups, dfl_cgrp, kn, name), CG_MAX);
	emit(s, pos, VG_SRC_PROCESS);
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(vg_fork, struct task_struct *parent, struct task_struct *child)
{
	if (BPF_CORE_READ(child, pid) != BPF_CORE_READ(child, tgid))
		return 0; /* a new thread, not a new process */
	struct scratch *s = scratch();
	if (!s)
		return 0;
	struct vg_hdr *h = (struct vg_hdr *)s->ev;
	fill_hdr(h, parent, VG_FORK);
	struct vg_fork *f = (struct vg_fork *)(s->ev + sizeof(struct vg_hdr));
	f->child_tgid = BPF_CORE_READ(child, tgid);
	f->pad = 0;
	f->child_start_boottime = BPF_CORE_READ(child, start_boottime);
	emit(s, sizeof(struct vg_hdr) + sizeof(struct vg_fork), VG_SRC_PROCESS);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(vg_exit, struct task_struct *p)
{
	/* do_exit() counts the thread out of signal->live before this tracepoint;
	 * read it rather than the tracepoint's group_dead argument, which kernels
	 * before 6.16 do not pass. */
	if (BPF_CORE_READ(p, signal, live.counter) != 0)
		return 0; /* another thread of the process lives on */
	struct scratch *s = scratch();
	if (!s)
		return 0;
	struct vg_hdr *h = (struct vg_hdr *)s->ev;
	fill_hdr(h, p, VG_EXIT);
	int code = BPF_CORE_READ(p, exit_code);
	if (BPF_CORE_READ(p, signal, flags) & SIGNAL_GROUP_EXIT)
		code = BPF_CORE_READ(p, signal, group_exit_code);
	struct vg_exit *e = (struct vg_exit *)(s->ev + sizeof(struct vg_hdr));
	e->code = (code >> 8) & 0xff;
	e->signal = code & 0x7f;
	emit(s, sizeof(struct vg_hdr) + sizeof(struct vg_exit), VG_SRC_PROCESS);
	return 0;
}

/* -------------------------------------------------------------------- files */

static __always_inline int skip_self(struct vg_config *c)
{
	return c && c->self_tgid == (__u32)(bpf_get_current_pid_tgid() >> 32);
}

/* A path argument at syscall entry: the user string and, when it is relative,
 * the directory it is relative to (walked now, while dfd still means it). */
static __always_inline __u32 put_at(struct scratch *s, __u32 pos, struct task_struct *t, int dfd, const char *name, __u32 *flags)
{
	__u32 start = pos;
	pos = put_user_str(s, pos, name);
	char first = 0;
	if (start <= EV_HALF - 3)
		first = s->ev[(start + 2) & (EV_HALF - 1)];
	if (pos == start + 2 || first == '/')
		return put_empty(s, pos);
	if (dfd == AT_FDCWD) {
		struct fs_struct *fs = BPF_CORE_READ(t, fs);
		return put_path(s, pos, BPF_CORE_READ(fs, pwd.dentry), BPF_CORE_READ(fs, pwd.mnt), flags);
	}
	struct file *f = fd_file(t, dfd);
	if (!f)
		return put_empty(s, pos);
	return put_path(s, pos, BPF_CORE_READ(f, f_path.dentry), BPF_CORE_READ(f, f_path.mnt), flags);
}

static __always_inline struct vg_file *file_hdr(struct scratch *s, struct task_struct *t, __u16 op)
{
	struct vg_hdr *h = (struct vg_hdr *)s->ev;
	fill_hdr(h, t, VG_FILE);
	h->op = op;
	struct vg_file *f = (struct vg_file *)(s->ev + sizeof(struct vg_hdr));
	__builtin_memset(f, 0, sizeof(*f));
	f->uid = (__u32)-1;
	f->gid = (__u32)-1;
	f->fd = -1;
	return f;
}

/* A file event at entry (delete, rename, chmod, chown): paths now, result at exit. */
static __always_inline int file_at_entry(struct pt_regs *regs, long id)
{
	struct scratch *s = scratch();
	if (!s)
		return 0;
	struct task_struct *t = (struct task_struct *)bpf_get_current_task_btf();
	struct vg_hdr *h = (struct vg_hdr *)s->ev;
	__u32 pos = sizeof(struct vg_hdr) + sizeof(struct vg_file);
	struct vg_file *f;
	unsigned long a0 = BPF_CORE_READ(regs, di), a1 = BPF_CORE_READ(regs, si), a2 = BPF_CORE_READ(regs, dx),
		      a3 = BPF_CORE_READ(regs, r10);
	switch (id) {
	case NR_unlink:
	case NR_rmdir:
		f = file_hdr(s, t, VG_F_DELETE);
		if (id == NR_rmdir)
			h->flags |= VG_FL_DIR;
		pos = put_at(s, pos, t, AT_FDCWD, (const char *)a0, &h->flags);
		pos = put_empty(s, put_empty(s, pos));
		break;
	case NR_unlinkat:
		f = file_hdr(s, t, VG_F_DELETE);
		if (a2 & AT_REMOVEDIR)
			h->flags |= VG_FL_DIR;
		pos = put_at(s, pos, t, (int)a0, (const char *)a1, &h->flags);
		pos = put_empty(s, put_empty(s, pos));
		break;
	case NR_rename:
		f = file_hdr(s, t, VG_F_RENAME);
		pos = put_at(s, pos, t, AT_FDCWD, (const char *)a0, &h->flags);
		pos = put_at(s, pos, t, AT_FDCWD, (const char *)a1, &h->flags);
		break;
	case NR_renameat:
	case NR_renameat2:
		f = file_hdr(s, t, VG_F_RENAME);
		pos = put_at(s, pos, t, (int)a0, (const char *)a1, &h->flags);
		pos = put_at(s, pos, t, (int)a2, (const char *)a3, &h->flags);
		break;
	case NR_chmod:
		f = file_hdr(s, t, VG_F_CHMOD);
		f->mode = a1;
		pos = put_at(s, pos, t, AT_FDCWD, (const char *)a0, &h->flags);
		pos = put_empty(s, put_empty(s, pos));
		break;
	case NR_fchmodat:
	case NR_fchmodat2:
		f = file_hdr(s, t, VG_F_CHMOD);
		f->mode = a2;
		pos = put_at(s, pos, t, (int)a0, (const char *)a1, &h->flags);
		pos = put_empty(s, put_empty(s, pos));
		break;
	case NR_chown:
	case NR_lchown:
		f = file_hdr(s, t, VG_F_CHOWN);
		f->uid = a1;
		f->gid = a2;
		pos = put_at(s, pos, t, AT_FDCWD, (const char *)a0, &h->flags);
		pos = put_empty(s, put_empty(s, pos));
		break;
	case NR_fchownat:
		f = file_hdr(s, t, VG_F_CHOWN);
		f->uid = a2;
		f->gid = a3;
		pos = put_at(s, pos, t, (int)a0, (const char *)a1, &h->flags);
		pos = put_empty(s, put_empty(s, pos));
		break;
	case NR_fchmod:
	case NR_fchown: {
		struct file *file = fd_file(t, (int)a0);
		if (!file || pseudo_fs(file))
			return 0;
		f = file_hdr(s, t, id == NR_fchmod ? VG_F_CHMOD : VG_F_CHOWN);
		f->fd = (int)a0;
		if (id == NR_fchmod) {
			f->mode = a1;
		} else {
			f->uid = a1;
			f->gid = a2;
		}
		pos = put_path(s, pos, BPF_CORE_READ(file, f_path.dentry), BPF_CORE_READ(file, f_path.mnt), &h->flags);
		pos = put_empty(s, put_empty(s, put_empty(s, pos)));
		break;
	}
	default:
		return 0;
	}
	h->flags |= VG_FL_PENDING;
	emit(s, pos, VG_SRC_FILE);
	return 0;
}

/* An open that succeeded: created, truncated, or opened for writing. */
static __always_inline int file_opened(long ret, __u64 flags)
{
	if (ret < 0)
		return 0;
	int fd = (int)ret;
	struct task_struct *t = (struct task_struct *)bpf_get_current_task_btf();
	struct file *file = fd_file(t, fd);
	if (!file)
		return 0;
	unsigned int fmode = BPF_CORE_READ(file, f_mode);
	if (!(fmode & FMODE_WRITE))
		return 0;
	umode_t imode = BPF_CORE_READ(file, f_inode, i_mode);
	if ((imode & S_IFMT) != S_IFREG || pseudo_fs(file))
		return 0;
	__u32 created = (fmode & FMODE_CREATED) != 0;
	__u64 key = ((__u64)(bpf_get_current_pid_tgid() >> 32) << 32) | (__u32)fd;
	struct vg_writer w = { .file = (__u64)file, .state = created ? W_CREATED : 0 };
	__u16 op = 0;
	if (created)
		op = VG_F_CREATE;
	else if (flags & O_TRUNC) {
		op = VG_F_MODIFY;
		w.state |= W_REPORTED | W_WRITTEN;
	}
	bpf_map_update_elem(&writers, &key, &w, BPF_ANY);
	if (!op)
		return 0;
	struct scratch *s = scratch();
	if (!s)
		return 0;
	struct vg_file *f = file_hdr(s, t, op);
	struct vg_hdr *h = (struct vg_hdr *)s->ev;
	f->fd = fd;
	f->mode = imode;
	f->ino = BPF_CORE_READ(file, f_inode, i_ino);
	f->dev = BPF_CORE_READ(file, f_inode, i_sb, s_dev);
	__u32 pos = sizeof(struct vg_hdr) + sizeof(struct vg_file);
	pos = put_path(s, pos, BPF_CORE_READ(file, f_path.dentry), BPF_CORE_READ(file, f_path.mnt), &h->flags);
	pos = put_empty(s, put_empty(s, put_empty(s, pos)));
	emit(s, pos, VG_SRC_FILE);
	return 0;
}

/* First write to, or close of, a file tracked in `writers`. */
static __always_inline int file_fd_event(int fd, int closing)
{
	__u64 key = ((__u64)(bpf_get_current_pid_tgid() >> 32) << 32) | (__u32)fd;
	struct vg_writer *w = bpf_map_lookup_elem(&writers, &key);
	if (!w)
		return 0;
	struct task_struct *t = (struct task_struct *)bpf_get_current_task_btf();
	struct file *file = fd_file(t, fd);
	if (!file || (__u64)file != w->file) {
		bpf_map_delete_elem(&writers, &key); /* stale: another file holds this fd now */
		return 0;
	}
	__u32 state = w->state;
	__u16 op = 0;
	if (closing) {
		bpf_map_delete_elem(&writers, &key);
		if (state & (W_WRITTEN | W_CREATED))
			op = VG_F_CLOSE_WRITE;
	} else {
		if (state & W_WRITTEN)
			return 0;
		w->state = state | W_WRITTEN;
		if (!(state & W_CREATED))
			op = VG_F_MODIFY; /* a created file's first write is part of its creation */
	}
	if (!op)
		return 0;
	struct scratch *s = scratch();
	if (!s)
		return 0;
	struct vg_file *f = file_hdr(s, t, op);
	struct vg_hdr *h = (struct vg_hdr *)s->ev;
	f->fd = fd;
	f->mode = BPF_CORE_READ(file, f_inode, i_mode);
	f->ino = BPF_CORE_READ(file, f_inode, i_ino);
	f->dev = BPF_CORE_READ(file, f_inode, i_sb, s_dev);
	__u32 pos = sizeof(struct vg_hdr) + sizeof(struct vg_file);
	pos = put_path(s, pos, BPF_CORE_READ(file, f_path.dentry), BPF_CORE_READ(file, f_path.mnt), &h->flags);
	pos = put_empty(s, put_empty(s, put_empty(s, pos)));
	emit(s, pos, VG_SRC_FILE);
	return 0;
}

/* ------------------------------------------------------------------ network */

static __always_inline void sock_tuple(struct vg_net *n, const struct sock *sk)
{
	__builtin_memset(n, 0, sizeof(*n));
	n->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	n->proto = BPF_CORE_READ(sk, sk_protocol);
	n->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	n->dport = __builtin_bswap16(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (n->family == AF_INET) {
		__u32 sa = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		__u32 da = BPF_CORE_READ(sk, __sk_common.skc_daddr);
		__builtin_memcpy(n->saddr, &sa, 4);
		__builtin_memcpy(n->daddr, &da, 4);
	} else {
		BPF_CORE_READ_INTO(&n->saddr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
		BPF_CORE_READ_INTO(&n->daddr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	}
}

static __always_inline int net_emit(struct scratch *s, const struct sock *sk, __u16 dir)
{
	struct vg_hdr *h = (struct vg_hdr *)s->ev;
	h->kind = VG_NET;
	h->op = dir;
	struct vg_net *n = (struct vg_net *)(s->ev + sizeof(struct vg_hdr));
	sock_tuple(n, sk);
	if (n->family != AF_INET && n->family != AF_INET6)
		return 0;
	return emit(s, sizeof(struct vg_hdr) + sizeof(struct vg_net), VG_SRC_NETWORK);
}

static __always_inline int net_enabled(void)
{
	struct vg_config *c = cfg();
	return c && c->network && !skip_self(c);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(vg_sock_state, const struct sock *sk, const int oldstate, const int newstate)
{
	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	struct vg_config *c = cfg();
	if (!c || !c->network)
		return 0;
	__u64 key = (__u64)sk;
	if (newstate == TCP_SYN_SENT || newstate == TCP_LISTEN ||
	    (oldstate == TCP_LISTEN && newstate == TCP_CLOSE)) {
		/* Process context: connect(), listen() or close() of a listener. */
		if (skip_self(c))
			return 0;
		struct scratch *s = scratch();
		if (!s)
			return 0;
		struct task_struct *t = (struct task_struct *)bpf_get_current_task_btf();
		fill_hdr((struct vg_hdr *)s->ev, t, VG_NET);
		if (newstate == TCP_SYN_SENT) {
			bpf_map_update_elem(&connecting, &key, s->ev, BPF_ANY);
			return 0;
		}
		net_emit(s, sk, newstate == TCP_LISTEN ? VG_N_LISTEN : VG_N_LISTEN_CLOSED);
		return 0;
	}
	if (oldstate != TCP_SYN_SENT)
		return 0;
	/* The handshake ended, usually in softirq: report it as the connecting process. */
	struct conn_owner *o = bpf_map_lookup_elem(&connecting, &key);
	if (!o)
		return 0;
	struct scratch *s = scratch();
	if (!s) {
		bpf_map_delete_elem(&connecting, &key);
		return 0;
	}
	__builtin_memcpy(s->ev, &o->hdr, sizeof(struct vg_hdr));
	bpf_map_delete_elem(&connecting, &key);
	((struct vg_hdr *)s->ev)->boot_ns = bpf_ktime_get_boot_ns();
	net_emit(s, sk, newstate == TCP_ESTABLISHED ? VG_N_OUTBOUND : VG_N_OUTBOUND_FAILED);
	return 0;
}

static __always_inline const struct sock *fd_sock(struct task_struct *t, int fd)
{
	struct file *f = fd_file(t, fd);
	if (!f)
		return 0;
	if (BPF_CORE_READ(f, f_inode, i_sb, s_magic) != SOCKFS_MAGIC)
		return 0;
	struct socket *sock = BPF_CORE_READ(f, private_data);
	return BPF_CORE_READ(sock, sk);
}

/* accept() returned a connection; connect()/bind() of a UDP socket succeeded. */
static __always_inline int net_sys_exit(long id, long ret, int fd)
{
	if (!net_enabled())
		return 0;
	struct task_struct *t = (struct task_struct *)bpf_get_current_task_btf();
	const struct sock *sk = fd_sock(t, id == NR_accept || id == NR_accept4 ? (int)ret : fd);
	if (!sk)
		return 0;
	__u8 proto = BPF_CORE_READ(sk, sk_protocol);
	__u16 dir;
	if (id == NR_accept || id == NR_accept4) {
		if (proto != IPPROTO_TCP)
			return 0;
		dir = VG_N_INBOUND;
	} else if (proto == IPPROTO_UDP) {
		dir = id == NR_connect ? VG_N_OUTBOUND : VG_N_LISTEN;
	} else {
		return 0; /* TCP connect is reported from the socket's state */
	}
	struct scratch *s = scratch();
	if (!s)
		return 0;
	fill_hdr((struct vg_hdr *)s->ev, t, VG_NET);
	return net_emit(s, sk, dir);
}

/* ----------------------------------------------------------------- syscalls */

static __always_inline int interesting(long id)
{
	if (id < 0 || id >= NR_MAX)
		return 0;
	__u32 k = id;
	__u8 *v = bpf_map_lookup_elem(&interest, &k);
	return v && *v;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(vg_sys_enter, struct pt_regs *regs, long id)
{
	if (!interesting(id))
		return 0;
	struct vg_config *c = cfg();
	if (!c || skip_self(c))
		return 0;
	switch (id) {
	case NR_open:
	case NR_creat:
	case NR_openat:
	case NR_openat2: {
		if (!c->files)
			return 0;
		__u64 flags;
		if (id == NR_open)
			flags = BPF_CORE_READ(regs, si);
		else if (id == NR_creat)
			flags = O_CREAT | O_WRONLY | O_TRUNC;
		else if (id == NR_openat)
			flags = BPF_CORE_READ(regs, dx);
		else {
			struct open_how *how = (struct open_how *)BPF_CORE_READ(regs, dx);
			flags = 0;
			bpf_probe_read_user(&flags, sizeof(flags), &how->flags);
		}
		if (!(flags & (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC)))
			return 0;
		__u32 tid = (__u32)bpf_get_current_pid_tgid();
		bpf_map_update_elem(&open_flags, &tid, &flags, BPF_ANY);
		return 0;
	}
	case NR_write:
	case NR_pwrite64:
	case NR_writev:
	case NR_pwritev:
	case NR_pwritev2:
		return c->files ? file_fd_event((int)BPF_CORE_READ(regs, di), 0) : 0;
	case NR_close:
		return c->files ? file_fd_event((int)BPF_CORE_READ(regs, di), 1) : 0;
	case NR_connect:
	case NR_accept:
	case NR_accept4:
	case NR_bind:
		return 0; /* seen at exit */
	default:
		return c->files ? file_at_entry(regs, id) : 0;
	}
}

SEC("tp_btf/sys_exit")
int BPF_PROG(vg_sys_exit, struct pt_regs *regs, long ret)
{
	long id = BPF_CORE_READ(regs, orig_ax);
	if (!interesting(id))
		return 0;
	struct vg_config *c = cfg();
	if (!c || skip_self(c))
		return 0;
	switch (id) {
	case NR_open:
	case NR_creat:
	case NR_openat:
	case NR_openat2: {
		__u32 tid = (__u32)bpf_get_current_pid_tgid();
		__u64 *fl = bpf_map_lookup_elem(&open_flags, &tid);
		if (!fl)
			return 0;
		__u64 flags = *fl;
		bpf_map_delete_elem(&open_flags, &tid);
		return file_opened(ret, flags);
	}
	case NR_connect:
	case NR_accept:
	case NR_accept4:
	case NR_bind:
		if (ret < 0)
			return 0;
		return net_sys_exit(id, ret, (int)BPF_CORE_READ(regs, di));
	case NR_write:
	case NR_pwrite64:
	case NR_writev:
	case NR_pwritev:
	case NR_pwritev2:
	case NR_close:
		return 0;
	default: {
		if (!c->files)
			return 0;
		/* The result of a file syscall reported at entry. */
		struct scratch *s = scratch();
		if (!s)
			return 0;
		struct vg_hdr *h = (struct vg_hdr *)s->ev;
		__builtin_memset(h, 0, sizeof(*h));
		h->kind = VG_SYS_EXIT;
		h->boot_ns = bpf_ktime_get_boot_ns();
		__u64 pt = bpf_get_current_pid_tgid();
		h->tgid = pt >> 32;
		h->tid = (__u32)pt;
		struct vg_sys_exit *x = (struct vg_sys_exit *)(s->ev + sizeof(struct vg_hdr));
		x->ret = ret;
		emit(s, sizeof(struct vg_hdr) + sizeof(struct vg_sys_exit), VG_SRC_FILE);
		return 0;
	}
	}
}
