/*
 * containerd-shim-kuasar-<kind>-v2: the shim binary containerd 1.6/1.7 runs for Kuasar tasks.
 *
 * Kuasar keeps one resident sandboxer per node and kind that serves the ttrpc Task API on one
 * socket (default /run/kuasar-<kind>/task.sock, env KUASAR_<KIND>_TASK_SOCKET overrides it).
 * containerd 1.x has no sandbox proxy plugins, so it still runs a shim binary per task:
 *
 *   <shim> -namespace <ns> -address <sock> -publish-binary <containerd> -id <id> [-debug] start
 *       checks that the sandboxer accepts connections, writes ./address, prints the task address.
 *   <shim> ... -id <id> -bundle <path> [-debug] delete
 *       Kill(SIGKILL, all) + Wait + Delete through the sandboxer; prints a DeleteResponse protobuf.
 *   <shim> relay --listen <sock> --upstream <task sock> [...]
 *       the long-lived task relay the sandboxer starts in front of its task socket (task-relay.c).
 *
 * This is C, not Node, because containerd runs it on every container start and delete: a Node
 * process costs ~120 ms to start, this costs ~1 ms (see ../README.md for the measurements).
 * The ttrpc frame and the protobuf messages below are hand-written for the four messages needed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "task-relay.h"

#ifndef KUASAR_VERSION
#define KUASAR_VERSION "dev"
#endif

#define EXIT_USAGE 2
#define PROGRAM_PREFIX "containerd-shim-kuasar-"
#define PROGRAM_SUFFIX "-v2"
#define MAX_KIND 32
#define MAX_ID 1024                 /* containerd ids are <= 76 bytes; this only bounds our buffers */
#define MAX_FRAME (4u << 20)        /* ttrpc's data limit */
#define TASK_SERVICE "containerd.task.v2.Task"
#define NAMESPACE_KEY "containerd-namespace-ttrpc"
#define SIGKILL_NUMBER 9
#define EXIT_STATUS_KILLED 137      /* 128 + SIGKILL, what runc-v2 reports when it cannot know */

/* google.rpc codes the delete path tells apart */
#define CODE_DEADLINE_EXCEEDED 4
#define CODE_NOT_FOUND 5

/* The delete action must finish inside containerd's 5 s cleanup timeout. */
#define KILL_TIMEOUT_MS 1000
#define WAIT_TIMEOUT_MS 2000
#define DELETE_TIMEOUT_MS 1500

struct options {
	const char *namespace;
	const char *address;
	const char *publish_binary;
	const char *id;
	const char *bundle;
	const char *action;
	int debug;
	int version;
};

static const char *program = PROGRAM_PREFIX "<kind>" PROGRAM_SUFFIX;

/* ---------------------------------------------------------------- output helpers */

static int write_all(int fd, const void *data, size_t len)
{
	const uint8_t *p = data;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* One line to fd; used for the start error (stdout) and delete warnings (stderr). */
static void say(int fd, const char *fmt, ...)
{
	char line[2048];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof line - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof line - 2)
		n = sizeof line - 2;
	line[n++] = '\n';
	(void)write_all(fd, line, (size_t)n);
}

static void usage(int fd)
{
	say(fd, "usage: %s -namespace <ns> -address <containerd socket> -publish-binary <containerd> -id <id> [-bundle <path>] [-debug] start|delete\n"
		"       %s relay --listen <socket> --upstream <task socket> [...]   (see %s relay -h)\n"
		"       %s -v", program, program, program, program);
}

/* ---------------------------------------------------------------- command line (Go flag syntax) */

/* Accepts -name value, --name value, -name=value, --name=value; bool flags also -name=true|false. */
static int parse_args(int argc, char **argv, struct options *o)
{
	static const struct {
		const char *name;
		size_t offset;
	} value_flags[] = {
		{ "namespace", offsetof(struct options, namespace) },
		{ "address", offsetof(struct options, address) },
		{ "publish-binary", offsetof(struct options, publish_binary) },
		{ "id", offsetof(struct options, id) },
		{ "bundle", offsetof(struct options, bundle) },
	};
	int i = 1;
	for (; i < argc; i++) {
		const char *arg = argv[i];
		if (arg[0] != '-' || arg[1] == '\0')
			break;
		if (strcmp(arg, "--") == 0) {
			i++;
			break;
		}
		const char *name = arg + (arg[1] == '-' ? 2 : 1);
		const char *eq = strchr(name, '=');
		size_t name_len = eq ? (size_t)(eq - name) : strlen(name);

		if ((name_len == 5 && strncmp(name, "debug", 5) == 0) || (name_len == 1 && name[0] == 'v')) {
			int value = 1;
			if (eq) {
				if (strcmp(eq + 1, "true") == 0 || strcmp(eq + 1, "1") == 0)
					value = 1;
				else if (strcmp(eq + 1, "false") == 0 || strcmp(eq + 1, "0") == 0)
					value = 0;
				else {
					say(2, "%s: invalid boolean value \"%s\" for flag -%.*s", program, eq + 1, (int)name_len, name);
					return -1;
				}
			}
			if (name[0] == 'v')
				o->version = value;
			else
				o->debug = value;
			continue;
		}
		if ((name_len == 1 && name[0] == 'h') || (name_len == 4 && strncmp(name, "help", 4) == 0)) {
			usage(1);
			exit(0);
		}
		size_t k = 0;
		for (; k < sizeof value_flags / sizeof value_flags[0]; k++)
			if (strlen(value_flags[k].name) == name_len && strncmp(value_flags[k].name, name, name_len) == 0)
				break;
		if (k == sizeof value_flags / sizeof value_flags[0]) {
			say(2, "%s: flag provided but not defined: -%.*s", program, (int)name_len, name);
			return -1;
		}
		const char *value;
		if (eq) {
			value = eq + 1;
		} else {
			if (i + 1 >= argc) {
				say(2, "%s: flag needs an argument: -%.*s", program, (int)name_len, name);
				return -1;
			}
			value = argv[++i];
		}
		*(const char **)((char *)o + value_flags[k].offset) = value;
	}
	if (i < argc)
		o->action = argv[i++];
	if (i < argc) {
		say(2, "%s: unexpected argument \"%s\" after action \"%s\"", program, argv[i], o->action);
		return -1;
	}
	return 0;
}

/* kind from argv[0]'s basename containerd-shim-kuasar-<kind>-v2; [a-z0-9]+ so it maps to an env name. */
static int derive_kind(const char *argv0, char kind[MAX_KIND + 1])
{
	const char *base = strrchr(argv0, '/');
	base = base ? base + 1 : argv0;
	size_t len = strlen(base), pre = strlen(PROGRAM_PREFIX), suf = strlen(PROGRAM_SUFFIX);
	if (len <= pre + suf || strncmp(base, PROGRAM_PREFIX, pre) != 0 || strcmp(base + len - suf, PROGRAM_SUFFIX) != 0)
		return -1;
	size_t n = len - pre - suf;
	if (n > MAX_KIND)
		return -1;
	for (size_t i = 0; i < n; i++) {
		char c = base[pre + i];
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')))
			return -1;
		kind[i] = c;
	}
	kind[n] = '\0';
	return 0;
}

/*
 * The sandboxer's task socket: $KUASAR_<KIND>_TASK_SOCKET or /run/kuasar-<kind>/task.sock.
 * Returns an error message (static) or NULL.
 */
static const char *task_socket_path(const char *kind, char *path, size_t size, char *env_name, size_t env_size)
{
	size_t n = (size_t)snprintf(env_name, env_size, "KUASAR_");
	for (const char *c = kind; *c && n + 1 < env_size; c++)
		env_name[n++] = (*c >= 'a' && *c <= 'z') ? (char)(*c - 'a' + 'A') : *c;
	env_name[n] = '\0';
	strncat(env_name, "_TASK_SOCKET", env_size - n - 1);

	const char *env = getenv(env_name);
	if (env && *env) {
		if ((size_t)snprintf(path, size, "%s", env) >= size)
			return "is too long";
	} else {
		snprintf(path, size, "/run/kuasar-%s/task.sock", kind);
	}
	if (path[0] != '/')
		return "must be an absolute path";
	if (strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
		return "does not fit in a unix socket address (max 107 bytes)";
	/* The path is printed inside JSON and read back by containerd: keep it free of quoting. */
	for (const char *c = path; *c; c++)
		if ((unsigned char)*c < 0x20 || *c == '"' || *c == '\\' || *c == 0x7f)
			return "contains a control character, quote or backslash";
	return NULL;
}

/* Returns a connected fd, or -1 with errno set. */
static int connect_unix(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	memcpy(sa.sun_path, path, strlen(path) + 1);
	/* Non-blocking so a sandboxer whose accept backlog is full fails fast instead of hanging containerd. */
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
		int saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---------------------------------------------------------------- protobuf (proto3 wire format) */

struct pb {
	uint8_t data[4096];
	size_t len;
	int overflow;
};

static void pb_raw(struct pb *b, const void *d, size_t n)
{
	if (b->overflow || n > sizeof b->data - b->len) {
		b->overflow = 1;
		return;
	}
	memcpy(b->data + b->len, d, n);
	b->len += n;
}

static void pb_varint(struct pb *b, uint64_t v)
{
	uint8_t tmp[10];
	size_t n = 0;
	do {
		tmp[n] = (uint8_t)(v & 0x7f);
		v >>= 7;
		if (v)
			tmp[n] |= 0x80;
		n++;
	} while (v);
	pb_raw(b, tmp, n);
}

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_I32 = 5 };

/* proto3: zero scalars and empty strings are not written. */
static void pb_uint(struct pb *b, unsigned field, uint64_t v)
{
	if (!v)
		return;
	pb_varint(b, (uint64_t)field << 3 | WT_VARINT);
	pb_varint(b, v);
}

static void pb_bytes(struct pb *b, unsigned field, const void *d, size_t n)
{
	if (!n)
		return;
	pb_varint(b, (uint64_t)field << 3 | WT_LEN);
	pb_varint(b, n);
	pb_raw(b, d, n);
}

static void pb_string(struct pb *b, unsigned field, const char *s)
{
	pb_bytes(b, field, s, strlen(s));
}

/* A sub-message field is written even when empty: its presence can matter (exited_at). */
static void pb_message(struct pb *b, unsigned field, const struct pb *m)
{
	if (m->overflow)
		b->overflow = 1;
	pb_varint(b, (uint64_t)field << 3 | WT_LEN);
	pb_varint(b, m->len);
	pb_raw(b, m->data, m->len);
}

struct pb_reader {
	const uint8_t *p, *end;
};

struct pb_field {
	unsigned number;
	unsigned wire_type;
	uint64_t varint;
	const uint8_t *data;
	size_t len;
};

static int pb_read_varint(struct pb_reader *r, uint64_t *v)
{
	*v = 0;
	for (unsigned shift = 0; shift < 64; shift += 7) {
		if (r->p >= r->end)
			return -1;
		uint8_t byte = *r->p++;
		*v |= (uint64_t)(byte & 0x7f) << shift;
		if (!(byte & 0x80))
			return 0;
	}
	return -1;
}

/* 1 = a field was read, 0 = end of message, -1 = malformed. Unknown fields are returned to be skipped. */
static int pb_next(struct pb_reader *r, struct pb_field *f)
{
	if (r->p >= r->end)
		return 0;
	uint64_t key;
	if (pb_read_varint(r, &key) < 0 || (key >> 3) == 0 || (key >> 3) > 0x1fffffff)
		return -1;
	f->number = (unsigned)(key >> 3);
	f->wire_type = (unsigned)(key & 7);
	f->varint = 0;
	f->data = NULL;
	f->len = 0;
	switch (f->wire_type) {
	case WT_VARINT:
		return pb_read_varint(r, &f->varint) < 0 ? -1 : 1;
	case WT_I64:
	case WT_I32: {
		size_t n = f->wire_type == WT_I64 ? 8 : 4;
		if ((size_t)(r->end - r->p) < n)
			return -1;
		f->data = r->p;
		f->len = n;
		r->p += n;
		return 1;
	}
	case WT_LEN: {
		uint64_t n;
		if (pb_read_varint(r, &n) < 0 || n > (uint64_t)(r->end - r->p))
			return -1;
		f->data = r->p;
		f->len = (size_t)n;
		r->p += n;
		return 1;
	}
	default:
		return -1; /* groups are not used by any message here */
	}
}

struct timestamp {
	int64_t seconds;
	int32_t nanos;
};

static struct timestamp timestamp_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (struct timestamp){ ts.tv_sec, (int32_t)ts.tv_nsec };
}

static void pb_timestamp(struct pb *b, unsigned field, struct timestamp t)
{
	struct pb m = { .len = 0 };
	pb_uint(&m, 1, (uint64_t)t.seconds);
	pb_uint(&m, 2, (uint64_t)(int64_t)t.nanos); /* int32 is sign-extended on the wire */
	pb_message(b, field, &m);
}

static int decode_timestamp(const uint8_t *d, size_t n, struct timestamp *t)
{
	struct pb_reader r = { d, d + n };
	struct pb_field f;
	int rc;
	*t = (struct timestamp){ 0, 0 };
	while ((rc = pb_next(&r, &f)) == 1) {
		if (f.number == 1 && f.wire_type == WT_VARINT)
			t->seconds = (int64_t)f.varint;
		else if (f.number == 2 && f.wire_type == WT_VARINT)
			t->nanos = (int32_t)f.varint;
	}
	return rc;
}

/* ---------------------------------------------------------------- ttrpc client (unary calls only) */

struct ttrpc {
	int fd;
	uint32_t next_stream; /* odd, increasing */
	const char *namespace;
};

struct rpc_result {
	int code;            /* google.rpc code; 0 = OK */
	char message[256];
	uint8_t *payload;    /* malloc'd response payload (NULL when empty) */
	size_t payload_len;
	uint8_t *frame;      /* owns payload's memory */
};

static void rpc_result_free(struct rpc_result *r)
{
	free(r->frame);
	r->frame = NULL;
	r->payload = NULL;
	r->payload_len = 0;
}

/* Reads exactly n bytes before the deadline. 0 = ok, -1 = error/EOF/timeout (errno set). */
static int read_full(int fd, void *buf, size_t n, int64_t deadline)
{
	uint8_t *p = buf;
	while (n > 0) {
		int64_t left = deadline - now_ms();
		if (left <= 0) {
			errno = ETIMEDOUT;
			return -1;
		}
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		int pr = poll(&pfd, 1, (int)left);
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr < 0)
			return -1;
		if (pr == 0) {
			errno = ETIMEDOUT;
			return -1;
		}
		ssize_t got = read(fd, p, n);
		if (got < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (got < 0)
			return -1;
		if (got == 0) {
			errno = ECONNRESET;
			return -1;
		}
		p += got;
		n -= (size_t)got;
	}
	return 0;
}

static int write_full(int fd, const void *buf, size_t n, int64_t deadline)
{
	const uint8_t *p = buf;
	while (n > 0) {
		ssize_t put = write(fd, p, n);
		if (put < 0 && errno == EINTR)
			continue;
		if (put < 0 && errno == EAGAIN) {
			int64_t left = deadline - now_ms();
			if (left <= 0) {
				errno = ETIMEDOUT;
				return -1;
			}
			struct pollfd pfd = { .fd = fd, .events = POLLOUT };
			if (poll(&pfd, 1, (int)left) < 0 && errno != EINTR)
				return -1;
			continue;
		}
		if (put < 0)
			return -1;
		p += put;
		n -= (size_t)put;
	}
	return 0;
}

/*
 * One unary call: Request{service, method, payload, timeout_nano, metadata[namespace]} and the Response
 * for our stream id (frames for other ids are skipped). Returns 0 when a Response arrived (result->code may
 * be an error status) or -1 on a transport failure (errno set).
 */
static int ttrpc_call(struct ttrpc *c, const char *method, const struct pb *request, int timeout_ms, struct rpc_result *result)
{
	memset(result, 0, sizeof *result);
	int64_t deadline = now_ms() + timeout_ms;

	struct pb md = { .len = 0 };
	pb_string(&md, 1, NAMESPACE_KEY);
	pb_string(&md, 2, c->namespace);

	struct pb req = { .len = 0 };
	pb_string(&req, 1, TASK_SERVICE);
	pb_string(&req, 2, method);
	pb_bytes(&req, 3, request->data, request->len);
	pb_uint(&req, 4, (uint64_t)timeout_ms * 1000000u);
	pb_message(&req, 5, &md);
	if (req.overflow || request->overflow) {
		errno = EMSGSIZE;
		return -1;
	}

	uint32_t stream = c->next_stream;
	c->next_stream += 2;
	uint8_t header[10];
	uint32_t len = (uint32_t)req.len;
	header[0] = (uint8_t)(len >> 24); header[1] = (uint8_t)(len >> 16);
	header[2] = (uint8_t)(len >> 8);  header[3] = (uint8_t)len;
	header[4] = (uint8_t)(stream >> 24); header[5] = (uint8_t)(stream >> 16);
	header[6] = (uint8_t)(stream >> 8);  header[7] = (uint8_t)stream;
	header[8] = 1; /* Request */
	header[9] = 0; /* unary */
	if (write_full(c->fd, header, sizeof header, deadline) < 0 || write_full(c->fd, req.data, req.len, deadline) < 0)
		return -1;

	for (;;) {
		if (read_full(c->fd, header, sizeof header, deadline) < 0)
			return -1;
		uint32_t n = (uint32_t)header[0] << 24 | (uint32_t)header[1] << 16 | (uint32_t)header[2] << 8 | header[3];
		uint32_t id = (uint32_t)header[4] << 24 | (uint32_t)header[5] << 16 | (uint32_t)header[6] << 8 | header[7];
		if (n > MAX_FRAME) {
			errno = EPROTO;
			return -1;
		}
		uint8_t *data = malloc(n ? n : 1);
		if (!data)
			return -1;
		if (read_full(c->fd, data, n, deadline) < 0) {
			free(data);
			return -1;
		}
		if (id != stream || header[8] != 2 /* Response */) {
			free(data);
			continue;
		}
		result->frame = data;
		struct pb_reader r = { data, data + n };
		struct pb_field f;
		int rc;
		while ((rc = pb_next(&r, &f)) == 1) {
			if (f.number == 1 && f.wire_type == WT_LEN) { /* google.rpc.Status */
				struct pb_reader s = { f.data, f.data + f.len };
				struct pb_field g;
				int src;
				while ((src = pb_next(&s, &g)) == 1) {
					if (g.number == 1 && g.wire_type == WT_VARINT)
						result->code = (int)(int32_t)g.varint;
					else if (g.number == 2 && g.wire_type == WT_LEN)
						snprintf(result->message, sizeof result->message, "%.*s", (int)g.len, (const char *)g.data);
				}
				if (src < 0)
					rc = -1;
			} else if (f.number == 2 && f.wire_type == WT_LEN) {
				result->payload = (uint8_t *)f.data;
				result->payload_len = f.len;
			}
			if (rc < 0)
				break;
		}
		if (rc < 0) {
			rpc_result_free(result);
			errno = EPROTO;
			return -1;
		}
		return 0;
	}
}

/* ---------------------------------------------------------------- actions */

static int is_json_capable_containerd(const struct options *o)
{
	/*
	 * containerd 1.7+ sets GRPC_ADDRESS and NAMESPACE for shims (runtime/v2/shim/util.go Command);
	 * 1.6 sets only TTRPC_ADDRESS. NAMESPACE must also match -namespace, so a stray variable inherited
	 * from containerd's own environment does not make 1.6 receive JSON it cannot parse.
	 */
	const char *grpc = getenv("GRPC_ADDRESS");
	const char *ns = getenv("NAMESPACE");
	return grpc && *grpc && ns && o->namespace && strcmp(ns, o->namespace) == 0;
}

/* Drains whatever containerd already wrote on stdin (runtime options Any); never blocks. */
static void drain_stdin(void)
{
	if (isatty(0))
		return;
	uint8_t buf[16384];
	for (size_t total = 0; total < (1u << 20);) {
		struct pollfd pfd = { .fd = 0, .events = POLLIN };
		if (poll(&pfd, 1, 0) <= 0 || !(pfd.revents & (POLLIN | POLLHUP)))
			return;
		ssize_t n = read(0, buf, sizeof buf);
		if (n <= 0)
			return;
		total += (size_t)n;
	}
}

/*
 * Atomic like containerd's shim.WriteAddress: temp file in the same dir, then rename. No fsync: the
 * bundle lives in containerd's state dir on tmpfs, which a host crash empties anyway.
 */
static int write_address_file(const char *address)
{
	const char *tmp = ".address";
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -1;
	if (write_all(fd, address, strlen(address)) < 0) {
		int saved = errno;
		close(fd);
		unlink(tmp);
		errno = saved;
		return -1;
	}
	if (close(fd) < 0 || rename(tmp, "address") < 0) {
		int saved = errno;
		unlink(tmp);
		errno = saved;
		return -1;
	}
	return 0;
}

/* start: everything goes to stdout, because containerd reads stdout and stderr combined as the address. */
static int action_start(const struct options *o, const char *kind, const char *socket_path, const char *env_name)
{
	drain_stdin();
	int fd = connect_unix(socket_path);
	if (fd < 0) {
		say(1, "kuasar %s sandboxer is not reachable at %s (%s%s%s); start it with `systemctl start kuasar-%s-sandboxer.service`",
			kind, socket_path, strerror(errno), getenv(env_name) ? "; path from " : "", getenv(env_name) ? env_name : "", kind);
		return 1;
	}
	close(fd);

	char address[sizeof(((struct sockaddr_un *)0)->sun_path) + 8];
	snprintf(address, sizeof address, "unix://%s", socket_path);
	/* Plain text on purpose: 1.6 reads the file as a bare address and 1.7 parses either form. */
	if (write_address_file(address) < 0) {
		char cwd[4096];
		say(1, "kuasar %s shim: cannot write the address file in bundle %s: %s", kind,
			getcwd(cwd, sizeof cwd) ? cwd : "(cwd unknown)", strerror(errno));
		return 1;
	}
	if (is_json_capable_containerd(o))
		say(1, "{\"version\":2,\"address\":\"%s\",\"protocol\":\"ttrpc\"}", address);
	else
		say(1, "%s", address);
	return 0;
}

static int print_delete_response(uint32_t pid, uint32_t exit_status, struct timestamp exited_at)
{
	struct pb out = { .len = 0 };
	pb_uint(&out, 1, pid);
	pb_uint(&out, 2, exit_status);
	pb_timestamp(&out, 3, exited_at);
	return write_all(1, out.data, out.len) < 0 ? 1 : 0;
}

/*
 * delete: containerd runs it when its connection to the task address closes (also after every normal
 * task delete) and expects a DeleteResponse on stdout and exit 0. It must never fail: when the sandboxer
 * cannot be reached the container cannot be cleaned up here, and containerd still needs an exit.
 */
static int action_delete(const struct options *o, const char *kind, const char *socket_path)
{
	struct ttrpc c = { .fd = -1, .next_stream = 1, .namespace = o->namespace };
	struct rpc_result res;
	struct pb req;
	int have_exit = 0;
	uint32_t exit_status = EXIT_STATUS_KILLED;
	struct timestamp exited_at = { 0, 0 };

	c.fd = connect_unix(socket_path);
	if (c.fd < 0) {
		say(2, "kuasar %s sandboxer is not reachable at %s (%s): task %s in namespace %s was not cleaned up; reporting exit status %d",
			kind, socket_path, strerror(errno), o->id, o->namespace, EXIT_STATUS_KILLED);
		return print_delete_response(0, EXIT_STATUS_KILLED, timestamp_now());
	}

	/* Kill(id, SIGKILL, all=true). NOT_FOUND: nothing is running (or the task is gone already). */
	int running = 1;
	memset(&req, 0, sizeof req);
	pb_string(&req, 1, o->id);
	pb_uint(&req, 3, SIGKILL_NUMBER);
	pb_uint(&req, 4, 1);
	if (ttrpc_call(&c, "Kill", &req, KILL_TIMEOUT_MS, &res) < 0) {
		say(2, "kuasar %s shim: Kill %s failed: %s", kind, o->id, strerror(errno));
		goto unreachable;
	}
	if (res.code == CODE_NOT_FOUND)
		running = 0;
	else if (res.code != 0)
		say(2, "kuasar %s shim: Kill %s: code %d: %s", kind, o->id, res.code, res.message);
	rpc_result_free(&res);

	/* Wait briefly so Delete does not meet a process that is still dying. */
	if (running) {
		memset(&req, 0, sizeof req);
		pb_string(&req, 1, o->id);
		if (ttrpc_call(&c, "Wait", &req, WAIT_TIMEOUT_MS, &res) < 0) {
			if (errno != ETIMEDOUT) {
				say(2, "kuasar %s shim: Wait %s failed: %s", kind, o->id, strerror(errno));
				goto unreachable;
			}
			say(2, "kuasar %s shim: task %s did not exit within %d ms of SIGKILL", kind, o->id, WAIT_TIMEOUT_MS);
			/*
			 * The sandboxer answers DEADLINE_EXCEEDED at the same moment we give up, so the connection may
			 * hold half a frame: Delete goes over a fresh one.
			 */
			close(c.fd);
			c.fd = connect_unix(socket_path);
			c.next_stream = 1;
			if (c.fd < 0) {
				say(2, "kuasar %s shim: reconnecting to %s failed: %s", kind, socket_path, strerror(errno));
				goto unreachable;
			}
		} else {
			if (res.code == CODE_DEADLINE_EXCEEDED)
				say(2, "kuasar %s shim: task %s did not exit within %d ms of SIGKILL", kind, o->id, WAIT_TIMEOUT_MS);
			else if (res.code != 0)
				say(2, "kuasar %s shim: Wait %s: code %d: %s", kind, o->id, res.code, res.message);
			if (res.code == 0) {
				struct pb_reader r = { res.payload, res.payload + res.payload_len };
				struct pb_field f;
				have_exit = 1;
				exit_status = 0;
				while (pb_next(&r, &f) == 1) {
					if (f.number == 1 && f.wire_type == WT_VARINT)
						exit_status = (uint32_t)f.varint;
					else if (f.number == 2 && f.wire_type == WT_LEN)
						decode_timestamp(f.data, f.len, &exited_at);
				}
			}
			rpc_result_free(&res);
		}
	}

	memset(&req, 0, sizeof req);
	pb_string(&req, 1, o->id);
	if (ttrpc_call(&c, "Delete", &req, DELETE_TIMEOUT_MS, &res) < 0) {
		say(2, "kuasar %s shim: Delete %s failed: %s", kind, o->id, strerror(errno));
		goto unreachable;
	}
	close(c.fd);
	if (res.code == 0) {
		/* The sandboxer's DeleteResponse is exactly what containerd wants; check it parses first. */
		struct pb_reader r = { res.payload, res.payload + res.payload_len };
		struct pb_field f;
		int rc;
		while ((rc = pb_next(&r, &f)) == 1)
			;
		if (rc == 0) {
			int failed = write_all(1, res.payload, res.payload_len) < 0;
			rpc_result_free(&res);
			return failed;
		}
		say(2, "kuasar %s shim: Delete %s returned a malformed DeleteResponse", kind, o->id);
	} else if (res.code != CODE_NOT_FOUND || running) {
		say(2, "kuasar %s shim: Delete %s: code %d: %s", kind, o->id, res.code, res.message);
	}
	rpc_result_free(&res);
	return print_delete_response(0, exit_status, have_exit && exited_at.seconds ? exited_at : timestamp_now());

unreachable:
	close(c.fd);
	return print_delete_response(0, exit_status, have_exit && exited_at.seconds ? exited_at : timestamp_now());
}

int main(int argc, char **argv)
{
	struct options o = { 0 };
	char kind[MAX_KIND + 1];
	char socket_path[256], env_name[64];

	/* A sandboxer closing the socket under us must be an error return, not a silent death. */
	signal(SIGPIPE, SIG_IGN);

	if (argc > 0 && argv[0] && argv[0][0]) {
		const char *slash = strrchr(argv[0], '/');
		program = slash ? slash + 1 : argv[0];
	}
	/* The relay is a different program sharing this binary (no second file to install); see task-relay.c. */
	if (argc >= 2 && strcmp(argv[1], "relay") == 0)
		return relay_main(argc - 2, argv + 2, program, derive_kind(argv[0], kind) == 0 ? kind : NULL);
	if (parse_args(argc, argv, &o) < 0) {
		usage(2);
		return EXIT_USAGE;
	}
	if (argc < 1 || derive_kind(argv[0], kind) < 0) {
		say(2, "%s: cannot derive the sandboxer kind from the program name; it must be named %s<kind>%s with kind in [a-z0-9]",
			program, PROGRAM_PREFIX, PROGRAM_SUFFIX);
		return EXIT_USAGE;
	}
	const char *bad = task_socket_path(kind, socket_path, sizeof socket_path, env_name, sizeof env_name);
	if (o.version) {
		say(1, "%s:\n  Version:     %s\n  Task socket: %s", program, KUASAR_VERSION, bad ? "(invalid)" : socket_path);
		return 0;
	}
	if (!o.action) {
		say(2, "%s: missing action (start or delete)", program);
		usage(2);
		return EXIT_USAGE;
	}
	int start = strcmp(o.action, "start") == 0;
	if (!start && strcmp(o.action, "delete") != 0) {
		say(2, "%s: unknown action \"%s\" (expected start or delete)", program, o.action);
		usage(2);
		return EXIT_USAGE;
	}
	/* During start even usage errors go to stdout: containerd shows the combined output as the error. */
	int err_fd = start ? 1 : 2;
	if (!o.namespace || !*o.namespace) {
		say(err_fd, "%s: -namespace is required", program);
		return EXIT_USAGE;
	}
	if (!o.id || !*o.id || strlen(o.id) > MAX_ID || strlen(o.namespace) > MAX_ID) {
		say(err_fd, "%s: -id is required (at most %d bytes, as is -namespace)", program, MAX_ID);
		return EXIT_USAGE;
	}
	if (bad) {
		say(err_fd, "%s: task socket path %s %s", program, getenv(env_name) ? env_name : socket_path, bad);
		if (!start) /* containerd still needs an exit for the task */
			return print_delete_response(0, EXIT_STATUS_KILLED, timestamp_now());
		return 1;
	}
	return start ? action_start(&o, kind, socket_path, env_name) : action_delete(&o, kind, socket_path);
}
