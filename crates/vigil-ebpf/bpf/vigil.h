/* Vigil sensor: the record layout shared by the BPF programs (vigil.bpf.c) and
 * the Rust decoder (src/decode.rs). Every record starts with struct vg_hdr; the
 * fixed part of its kind follows, then its strings, each a u16 length and the
 * bytes (no NUL). All integers are little-endian (x86_64, arm64). Change the
 * layout only together with VG_ABI and the decoder. */
#ifndef VIGIL_H
#define VIGIL_H

#define VG_ABI 1

enum vg_kind {
	VG_EXEC = 1,      /* strings: exe, cwd, argv (NUL-separated), tty, cgroup leaf */
	VG_FORK = 2,      /* fixed: vg_fork */
	VG_EXIT = 3,      /* fixed: vg_exit */
	VG_FILE = 4,      /* fixed: vg_file; strings: path, dir, path2, dir2 */
	VG_NET = 5,       /* fixed: vg_net */
	VG_SYS_EXIT = 6,  /* fixed: vg_sys_exit: the result of a syscall whose VG_FILE came at entry */
};

enum vg_file_op {
	VG_F_CREATE = 1,
	VG_F_MODIFY = 2,       /* first write after open, or open with O_TRUNC */
	VG_F_CLOSE_WRITE = 3,
	VG_F_DELETE = 4,       /* at entry; confirmed by VG_SYS_EXIT */
	VG_F_RENAME = 5,       /* at entry; path/dir = old, path2/dir2 = new */
	VG_F_CHMOD = 6,        /* at entry */
	VG_F_CHOWN = 7,        /* at entry */
};

/* Flags in vg_hdr.flags */
#define VG_FL_ARGV_TRUNCATED 0x1
#define VG_FL_ARGV_MISSING 0x2
#define VG_FL_PENDING 0x4     /* VG_FILE recorded at syscall entry: wait for VG_SYS_EXIT of the same tid */
#define VG_FL_DIR 0x8         /* the file is a directory (rmdir, AT_REMOVEDIR) */
#define VG_FL_PATH_TRUNC 0x10 /* a path was longer than the walk allows */

enum vg_net_dir {
	VG_N_OUTBOUND = 1,
	VG_N_INBOUND = 2,
	VG_N_LISTEN = 3,
	VG_N_LISTEN_CLOSED = 4,
	VG_N_OUTBOUND_FAILED = 5,
};

/* Counters (per-CPU array, index = source * 2 + {0 produced, 1 dropped}). */
enum vg_source {
	VG_SRC_PROCESS = 0,
	VG_SRC_FILE = 1,
	VG_SRC_NETWORK = 2,
	VG_SRC_COUNT = 3,
};

struct vg_hdr {
	unsigned short kind;
	unsigned short op;
	unsigned int size;      /* whole record, header included */
	unsigned long long boot_ns;
	unsigned int tgid;
	unsigned int tid;
	unsigned int ppid;
	unsigned int uid, euid, gid, egid;
	unsigned int auid, ses;
	unsigned int flags;
	unsigned long long cgroup_id;
	unsigned long long start_boottime; /* ns since boot, as /proc/PID/stat's starttime */
	char comm[16];
};

struct vg_fork {
	unsigned int child_tgid;
	unsigned int pad;
	unsigned long long child_start_boottime;
};

struct vg_exit {
	int code;   /* exit status (0..255) */
	int signal; /* terminating signal, 0 if none */
};

struct vg_file {
	unsigned int mode;   /* chmod: new mode; others: inode mode when known */
	unsigned int uid;    /* chown: new owner (-1 unchanged) */
	unsigned int gid;
	int fd;              /* for fchmod/fchown: the fd (path walked in the kernel) */
	unsigned long long ino;
	unsigned int dev;
	unsigned int pad;
};

struct vg_sys_exit {
	long long ret;
};

struct vg_net {
	unsigned char family; /* AF_INET 2, AF_INET6 10 */
	unsigned char proto;  /* IPPROTO_TCP 6, IPPROTO_UDP 17 */
	unsigned short sport; /* host order */
	unsigned short dport; /* host order */
	unsigned short pad;
	unsigned char saddr[16];
	unsigned char daddr[16];
};

#endif
