/*
 * The task relay: `containerd-shim-kuasar-<kind>-v2 relay --listen <sock> --upstream <sock> ...`.
 *
 * containerd keeps one ttrpc connection per task endpoint and parks a long-lived Wait on it for every
 * container. When the sandboxer dies that connection closes: containerd 2.x CRI reads the failed Wait as
 * "container exited (255)" and containerd 1.x runs the shim's delete and drops the task. containerd
 * therefore connects here instead of to the sandboxer's task socket. For every containerd connection the
 * relay keeps one upstream connection and copies whole frames both ways, stream ids unchanged. When the
 * upstream closes it keeps containerd's side open, reconnects every 100 ms, re-sends the requests still
 * waiting for a reply that are safe to repeat (Wait, State, ...) and answers the others UNAVAILABLE,
 * because it cannot know whether the old sandboxer acted on them. After --reconnect-ms without a
 * sandboxer the waiting calls fail UNAVAILABLE and the connection closes.
 *
 * It runs for the life of the node, so: one thread, epoll, buffers bounded per connection (one ttrpc
 * frame is at most 4 MiB, and reading stops while the other side's output is backed up), no state
 * besides the calls in flight. Garbage is passed on (the sandboxer's ttrpc server answers it) or, when
 * it breaks the framing limits, answered like ttrpc does (RESOURCE_EXHAUSTED) without buffering it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "task-relay.h"

#define HEADER 10
#define MAX_DATA (4u << 20)                  /* ttrpc messageLengthMax */
#define READ_CHUNK 65536
/* Stop reading a side while the other side has this much unsent output. */
#define OUT_HIGH (1u << 20)
/* Calls waiting for an answer on one connection: beyond this, new ones get RESOURCE_EXHAUSTED. */
#define PENDING_MAX_BYTES (16u << 20)
#define PENDING_MAX_CALLS 65536
#define RETRY_MS 100
#define WATCH_MS 2000
#define DEFAULT_RECONNECT_MS 120000
#define MAX_METHOD 64
/*
 * containerd 2.x reloads a task after its own restart by opening a connection and asking Connect with a 5 s deadline
 * (loadShimTask). When that fails (the sandboxer was down, or said no) it cleans the task up but never closes the
 * connection: nothing will ever use it again. Such a connection is closed this long after the probe's deadline, when
 * containerd's own clean-up (5 s) is over, so its close callback finds nothing left to do.
 */
#define PROBE_GRACE_MS 10000

#define T_REQUEST 1
#define T_RESPONSE 2

#define CODE_RESOURCE_EXHAUSTED 8
#define CODE_UNAVAILABLE 14

enum { LV_TRACE = 10, LV_DEBUG = 20, LV_INFO = 30, LV_WARN = 40, LV_ERROR = 50, LV_FATAL = 60, LV_SILENT = 100 };

static const char *const repeatable[] = { "Wait", "State", "Pids", "Stats", "Connect", "Kill", "Shutdown" };

/* ---------------------------------------------------------------- logging: pino's JSON line format */

static int log_level = LV_INFO;
static const char *log_kind;

struct line {
	char s[2048];
	size_t n;
};

static void line_raw(struct line *l, const char *s, size_t n)
{
	if (n > sizeof l->s - 3 - l->n)
		n = sizeof l->s - 3 - l->n; /* room for "}\n" */
	memcpy(l->s + l->n, s, n);
	l->n += n;
}

static void line_str(struct line *l, const char *s)
{
	line_raw(l, "\"", 1);
	for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
		char esc[8];
		if (*c == '"' || *c == '\\') {
			esc[0] = '\\';
			esc[1] = (char)*c;
			line_raw(l, esc, 2);
		} else if (*c < 0x20 || *c == 0x7f) {
			int k = snprintf(esc, sizeof esc, "\\u%04x", *c);
			line_raw(l, esc, (size_t)k);
		} else {
			line_raw(l, (const char *)c, 1);
		}
	}
	line_raw(l, "\"", 1);
}

static void line_field(struct line *l, const char *key)
{
	line_raw(l, ",", 1);
	line_str(l, key);
	line_raw(l, ":", 1);
}

static const char *level_label(int lv)
{
	switch (lv) {
	case LV_TRACE: return "trace";
	case LV_DEBUG: return "debug";
	case LV_INFO: return "info";
	case LV_WARN: return "warn";
	case LV_ERROR: return "error";
	default: return "fatal";
	}
}

static void log_begin(struct line *l, int lv)
{
	struct timespec ts;
	struct tm tm;
	char when[40];
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	size_t k = strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(when + k, sizeof when - k, ".%03ldZ", ts.tv_nsec / 1000000);
	l->n = 0;
	line_raw(l, "{\"level\":", 9);
	line_str(l, level_label(lv));
	line_field(l, "time");
	line_str(l, when);
	char pid[24];
	int n = snprintf(pid, sizeof pid, ",\"pid\":%d", (int)getpid());
	line_raw(l, pid, (size_t)n);
	if (log_kind) {
		line_field(l, "sandboxer");
		line_str(l, log_kind);
	}
	line_field(l, "component");
	line_str(l, "task-relay");
}

static void log_end(struct line *l, const char *msg)
{
	line_field(l, "msg");
	line_str(l, msg);
	l->s[l->n++] = '}';
	l->s[l->n++] = '\n';
	/* One write per line, so lines of the sandboxer sharing this stderr do not interleave mid-line. */
	ssize_t w;
	do
		w = write(2, l->s, l->n);
	while (w < 0 && errno == EINTR);
}

static void log_msg(int lv, const char *msg, const char *key, const char *value)
{
	if (lv < log_level)
		return;
	struct line l;
	log_begin(&l, lv);
	if (key) {
		line_field(&l, key);
		line_str(&l, value);
	}
	log_end(&l, msg);
}

/* ---------------------------------------------------------------- buffers */

struct buf {
	uint8_t *data;
	size_t off, len, cap; /* unread/unsent bytes are data[off..len) */
};

static size_t buf_used(const struct buf *b)
{
	return b->len - b->off;
}

/* Makes room for n more bytes; returns -1 when out of memory. */
static int buf_reserve(struct buf *b, size_t n)
{
	if (b->off > 0 && (b->off == b->len || b->len + n > b->cap)) {
		memmove(b->data, b->data + b->off, b->len - b->off);
		b->len -= b->off;
		b->off = 0;
	}
	if (b->len + n <= b->cap)
		return 0;
	size_t cap = b->cap ? b->cap : 4096;
	while (cap < b->len + n)
		cap *= 2;
	uint8_t *d = realloc(b->data, cap);
	if (!d)
		return -1;
	b->data = d;
	b->cap = cap;
	return 0;
}

static int buf_append(struct buf *b, const void *d, size_t n)
{
	if (buf_reserve(b, n) < 0)
		return -1;
	memcpy(b->data + b->len, d, n);
	b->len += n;
	return 0;
}

/* Drained buffers give their memory back: an idle connection holds no buffer at all. */
static void buf_consumed(struct buf *b, size_t n)
{
	b->off += n;
	if (b->off == b->len) {
		free(b->data);
		*b = (struct buf){ 0 };
	}
}

static void buf_free(struct buf *b)
{
	free(b->data);
	*b = (struct buf){ 0 };
}

/* ---------------------------------------------------------------- ttrpc bits */

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static size_t put_varint(uint8_t *p, uint64_t v)
{
	size_t n = 0;
	do {
		p[n] = (uint8_t)(v & 0x7f);
		v >>= 7;
		if (v)
			p[n] |= 0x80;
		n++;
	} while (v);
	return n;
}

static int get_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
	*v = 0;
	for (unsigned shift = 0; shift < 64; shift += 7) {
		if (*p >= end)
			return -1;
		uint8_t b = *(*p)++;
		*v |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80))
			return 0;
	}
	return -1;
}

/* Request.method (field 2) into out and Request.timeout_nano (field 4, 0 = none); "" and 0 when malformed. */
static void request_method(const uint8_t *d, size_t n, char out[MAX_METHOD], uint64_t *timeout_nano)
{
	const uint8_t *p = d, *end = d + n;
	out[0] = '\0';
	*timeout_nano = 0;
	while (p < end) {
		uint64_t key, v;
		if (get_varint(&p, end, &key) < 0)
			goto bad;
		switch (key & 7) {
		case 0:
			if (get_varint(&p, end, &v) < 0)
				goto bad;
			if ((key >> 3) == 4)
				*timeout_nano = v;
			break;
		case 1:
			if (end - p < 8)
				goto bad;
			p += 8;
			break;
		case 5:
			if (end - p < 4)
				goto bad;
			p += 4;
			break;
		case 2:
			if (get_varint(&p, end, &v) < 0 || v > (uint64_t)(end - p))
				goto bad;
			if ((key >> 3) == 2) {
				size_t k = v < MAX_METHOD - 1 ? (size_t)v : MAX_METHOD - 1;
				memcpy(out, p, k);
				out[k] = '\0';
			}
			p += v;
			break;
		default:
			goto bad;
		}
	}
	return;
bad:
	out[0] = '\0';
	*timeout_nano = 0;
}

/* Response.status.code (0 when there is no status, i.e. success; -1 when malformed). */
static int64_t response_code(const uint8_t *d, size_t n)
{
	const uint8_t *p = d, *end = d + n;
	while (p < end) {
		uint64_t key, v;
		if (get_varint(&p, end, &key) < 0)
			return -1;
		switch (key & 7) {
		case 0:
			if (get_varint(&p, end, &v) < 0)
				return -1;
			break;
		case 1:
			if (end - p < 8)
				return -1;
			p += 8;
			break;
		case 5:
			if (end - p < 4)
				return -1;
			p += 4;
			break;
		case 2:
			if (get_varint(&p, end, &v) < 0 || v > (uint64_t)(end - p))
				return -1;
			if ((key >> 3) == 1) {
				/* Status: code is field 1 */
				const uint8_t *q = p, *qend = p + v;
				while (q < qend) {
					uint64_t k2, v2;
					if (get_varint(&q, qend, &k2) < 0)
						return -1;
					if ((k2 & 7) == 0) {
						if (get_varint(&q, qend, &v2) < 0)
							return -1;
						if ((k2 >> 3) == 1)
							return (int64_t)(v2 & 0x7fffffff);
					} else if ((k2 & 7) == 2) {
						if (get_varint(&q, qend, &v2) < 0 || v2 > (uint64_t)(qend - q))
							return -1;
						q += v2;
					} else {
						return -1;
					}
				}
			}
			p += v;
			break;
		default:
			return -1;
		}
	}
	return 0;
}

static int is_repeatable(const char *method)
{
	for (size_t i = 0; i < sizeof repeatable / sizeof repeatable[0]; i++)
		if (strcmp(method, repeatable[i]) == 0)
			return 1;
	return 0;
}

/* Response{status: Status{code, message}} in one frame for stream. */
static int status_frame(struct buf *out, uint32_t stream, int code, const char *message)
{
	uint8_t frame[HEADER + 600];
	size_t mlen = strlen(message);
	if (mlen > 500)
		mlen = 500;
	uint8_t status[520];
	size_t s = 0;
	status[s++] = 1 << 3 | 0;
	s += put_varint(status + s, (uint64_t)code);
	status[s++] = 2 << 3 | 2;
	s += put_varint(status + s, mlen);
	memcpy(status + s, message, mlen);
	s += mlen;
	size_t n = HEADER;
	frame[n++] = 1 << 3 | 2; /* Response.status */
	n += put_varint(frame + n, s);
	memcpy(frame + n, status, s);
	n += s;
	put_be32(frame, (uint32_t)(n - HEADER));
	put_be32(frame + 4, stream);
	frame[8] = T_RESPONSE;
	frame[9] = 0;
	return buf_append(out, frame, n);
}

/* ---------------------------------------------------------------- connections */

enum { EP_LISTEN, EP_SIGNAL, EP_DOWN, EP_UP };

struct conn;

struct endpoint {
	int type;
	struct conn *conn;
	uint32_t events; /* what epoll watches now */
};

struct call {
	struct call *next;
	uint32_t stream;
	int queued;   /* waiting for an upstream; else sent on the current one */
	uint8_t *raw; /* the frame, kept while it may still have to be (re)sent */
	size_t raw_len;
	char method[MAX_METHOD];
};

/* A frame being read: the 10-byte header, then a body that is buffered or, when over the limit, skipped. */
struct reader {
	struct buf in;
	uint32_t skip; /* bytes of an oversized body still to discard */
};

struct conn {
	struct endpoint down_ep, up_ep;
	int down, up; /* containerd's fd; upstream fd or -1 */
	struct reader from_down, from_up;
	struct buf to_down, to_up;
	struct call *calls, **calls_tail; /* arrival order, which is containerd's stream-id order */
	size_t call_bytes;
	unsigned ncalls;
	int64_t down_since; /* -1 while connected upstream */
	int64_t retry_at;
	/* The first request was a Connect with a deadline and nothing else came yet; it failed unless answered OK in time. */
	int probe;
	uint32_t probe_stream;
	unsigned requests;
	int64_t probe_deadline, probe_reap_at;
	int closed;
	struct conn *next;
};

static struct {
	int epoll;
	const char *listen, *upstream, *pid_file;
	int64_t reconnect_ms;
	struct endpoint listen_ep, signal_ep;
	int listen_fd, signal_fd;
	ino_t listen_ino;
	dev_t listen_dev;
	int64_t watch_at, accept_paused_until;
	struct conn *conns;
	unsigned nconns;
	int stopping;
} R;

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void watch(struct endpoint *ep, int fd, uint32_t events)
{
	if (fd < 0 || ep->events == events)
		return;
	struct epoll_event ev = { .events = events, .data.ptr = ep };
	if (epoll_ctl(R.epoll, EPOLL_CTL_MOD, fd, &ev) == 0)
		ep->events = events;
}

static void conn_close(struct conn *c, const char *why)
{
	if (c->closed)
		return;
	c->closed = 1;
	if (why)
		log_msg(LV_DEBUG, "task relay: containerd connection closed", "why", why);
	close(c->down); /* also removes it from the epoll set */
	if (c->up >= 0)
		close(c->up);
	c->up = -1;
	buf_free(&c->from_down.in);
	buf_free(&c->from_up.in);
	buf_free(&c->to_down);
	buf_free(&c->to_up);
	for (struct call *k = c->calls, *next; k; k = next) {
		next = k->next;
		free(k->raw);
		free(k);
	}
	c->calls = NULL;
	R.nconns--;
	/* The struct itself is freed after this round of events: later events may still point at it. */
}

static void call_remove(struct conn *c, uint32_t stream)
{
	for (struct call **p = &c->calls; *p; p = &(*p)->next) {
		struct call *k = *p;
		if (k->stream != stream || k->queued)
			continue;
		*p = k->next;
		if (c->calls_tail == &k->next)
			c->calls_tail = p;
		c->call_bytes -= k->raw_len;
		c->ncalls--;
		free(k->raw);
		free(k);
		return;
	}
}

/* Answers a call ourselves (the relay cannot get the sandboxer's answer) and forgets it. */
static void answer(struct conn *c, uint32_t stream, int code, const char *message)
{
	if (status_frame(&c->to_down, stream, code, message) < 0)
		conn_close(c, "out of memory");
}

static void upstream_send(struct conn *c, struct call *k)
{
	if (buf_append(&c->to_up, k->raw, k->raw_len) < 0) {
		conn_close(c, "out of memory");
		return;
	}
	k->queued = 0;
	if (!is_repeatable(k->method)) {
		/* Never sent twice, so the bytes are no longer needed. */
		c->call_bytes -= k->raw_len;
		free(k->raw);
		k->raw = NULL;
		k->raw_len = 0;
	}
}

/* One complete frame from containerd. */
static void from_containerd(struct conn *c, const uint8_t *frame, size_t len)
{
	uint32_t stream = be32(frame + 4);
	if (frame[8] != T_REQUEST) {
		/* Stream data (the task API has none today) cannot be replayed: pass it on while connected. */
		if (c->up >= 0 && buf_append(&c->to_up, frame, len) < 0)
			conn_close(c, "out of memory");
		return;
	}
	if (c->ncalls >= PENDING_MAX_CALLS || c->call_bytes + len > PENDING_MAX_BYTES) {
		answer(c, stream, CODE_RESOURCE_EXHAUSTED, "task relay: too many calls in flight on this connection");
		return;
	}
	struct call *k = calloc(1, sizeof *k);
	uint8_t *raw = malloc(len);
	if (!k || !raw) {
		free(k);
		free(raw);
		answer(c, stream, CODE_RESOURCE_EXHAUSTED, "task relay: out of memory");
		return;
	}
	memcpy(raw, frame, len);
	k->stream = stream;
	k->raw = raw;
	k->raw_len = len;
	k->queued = 1;
	uint64_t timeout_nano;
	request_method(frame + HEADER, len - HEADER, k->method, &timeout_nano); /* "": the sandboxer answers the malformed request */
	if (c->requests == 0 && timeout_nano > 0 && strcmp(k->method, "Connect") == 0) {
		uint64_t ms = timeout_nano / 1000000 + 1;
		if (ms > 86400000u)
			ms = 86400000u;
		c->probe = 1;
		c->probe_stream = stream;
		c->probe_deadline = mono_ms() + (int64_t)ms;
		c->probe_reap_at = c->probe_deadline + PROBE_GRACE_MS;
	} else {
		c->probe = 0; /* containerd kept using the connection: it is in use */
	}
	if (c->requests < UINT32_MAX)
		c->requests++;
	*c->calls_tail = k;
	c->calls_tail = &k->next;
	c->call_bytes += len;
	c->ncalls++;
	if (c->up >= 0)
		upstream_send(c, k);
}

/* One complete frame from the sandboxer. */
static void from_sandboxer(struct conn *c, const uint8_t *frame, size_t len)
{
	if (frame[8] == T_RESPONSE) {
		uint32_t stream = be32(frame + 4);
		call_remove(c, stream);
		/* Our deadline is later than containerd's (it counts from arrival here), so "late" here is late there too. */
		if (c->probe && stream == c->probe_stream && mono_ms() <= c->probe_deadline &&
		    response_code(frame + HEADER, len - HEADER) == 0)
			c->probe = 0;
	}
	if (buf_append(&c->to_down, frame, len) < 0)
		conn_close(c, "out of memory");
}

/* A frame whose body exceeds ttrpc's limit: its body is skipped; a call it belongs to fails like ttrpc's own. */
static void oversized(struct conn *c, const uint8_t *header, int from_down)
{
	uint32_t stream = be32(header + 4);
	char msg[128];
	snprintf(msg, sizeof msg, "message length %u exceed maximum message size of %u", be32(header), MAX_DATA);
	if (from_down && header[8] == T_REQUEST) {
		answer(c, stream, CODE_RESOURCE_EXHAUSTED, msg);
	} else if (!from_down && header[8] == T_RESPONSE) {
		call_remove(c, stream);
		answer(c, stream, CODE_RESOURCE_EXHAUSTED, msg);
	}
	log_msg(LV_WARN, "task relay: dropped an oversized frame", "from", from_down ? "containerd" : "sandboxer");
}

/*
 * Reads what fd has (up to one chunk) and hands every complete frame to deliver. Returns 0, or -1 when
 * the peer closed or failed (errno 0 for EOF).
 */
static int pump(struct conn *c, int fd, struct reader *r, int from_down)
{
	/* Read into one shared chunk and keep only an incomplete frame per connection. */
	static uint8_t chunk[READ_CHUNK];
	ssize_t n = read(fd, chunk, sizeof chunk);
	if (n < 0)
		return errno == EAGAIN || errno == EINTR ? 0 : -1;
	if (n == 0) {
		errno = 0;
		return -1;
	}
	if (buf_append(&r->in, chunk, (size_t)n) < 0) {
		errno = ENOMEM;
		return -1;
	}
	while (!c->closed) {
		if (r->skip) {
			size_t k = buf_used(&r->in) < r->skip ? buf_used(&r->in) : r->skip;
			buf_consumed(&r->in, k);
			r->skip -= (uint32_t)k;
			if (r->skip)
				break;
			continue;
		}
		size_t avail = buf_used(&r->in);
		if (avail < HEADER)
			break;
		const uint8_t *h = r->in.data + r->in.off;
		uint32_t len = be32(h);
		if (len > MAX_DATA) {
			oversized(c, h, from_down);
			r->skip = len;
			buf_consumed(&r->in, HEADER);
			continue;
		}
		if (avail < HEADER + (size_t)len)
			break;
		if (from_down)
			from_containerd(c, h, HEADER + (size_t)len);
		else
			from_sandboxer(c, h, HEADER + (size_t)len);
		if (!c->closed)
			buf_consumed(&r->in, HEADER + (size_t)len);
	}
	return 0;
}

/* Writes what it can of b; -1 when the peer is gone. */
static int flush(int fd, struct buf *b)
{
	while (buf_used(b) > 0) {
		ssize_t n = send(fd, b->data + b->off, buf_used(b), MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0)
			return errno == EAGAIN || errno == EINTR ? 0 : -1;
		buf_consumed(b, (size_t)n);
	}
	return 0;
}

static void methods_json(struct line *l, struct conn *c, const char *key)
{
	line_field(l, key);
	line_raw(l, "[", 1);
	int first = 1;
	for (struct call *k = c->calls; k; k = k->next) {
		if (!k->queued)
			continue;
		if (!first)
			line_raw(l, ",", 1);
		line_str(l, k->method);
		first = 0;
	}
	line_raw(l, "]", 1);
}

static void try_connect(struct conn *c)
{
	int64_t now = mono_ms();
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	memcpy(sa.sun_path, R.upstream, strlen(R.upstream) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	/* EAGAIN (backlog full) counts as down too: try again in a moment. */
	if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
		struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &c->up_ep };
		if (epoll_ctl(R.epoll, EPOLL_CTL_ADD, fd, &ev) == 0) {
			c->up = fd;
			c->up_ep.events = EPOLLIN;
			if (c->down_since >= 0 && log_level <= LV_INFO) {
				struct line l;
				log_begin(&l, LV_INFO);
				methods_json(&l, c, "replayed");
				char ms[40];
				int k = snprintf(ms, sizeof ms, ",\"downMs\":%lld", (long long)(now - c->down_since));
				line_raw(&l, ms, (size_t)k);
				log_end(&l, "task relay reconnected");
			}
			c->down_since = -1;
			/* Arrival order is stream-id order, which the sandboxer's server expects on a connection. */
			for (struct call *k = c->calls; k && !c->closed; k = k->next)
				if (k->queued)
					upstream_send(c, k);
			return;
		}
	}
	if (fd >= 0)
		close(fd);
	if (c->down_since < 0)
		c->down_since = now;
	if (now - c->down_since > R.reconnect_ms) {
		char msg[200];
		snprintf(msg, sizeof msg, "sandboxer at %s is not reachable", R.upstream);
		for (struct call *k = c->calls; k; k = k->next)
			if (status_frame(&c->to_down, k->stream, CODE_UNAVAILABLE, msg) < 0)
				break;
		(void)flush(c->down, &c->to_down);
		log_msg(LV_ERROR, "task relay: sandboxer did not come back; closing the connection", "upstream", R.upstream);
		conn_close(c, NULL);
		return;
	}
	c->retry_at = now + RETRY_MS;
}

static void upstream_lost(struct conn *c)
{
	close(c->up);
	c->up = -1;
	c->up_ep.events = 0;
	buf_free(&c->to_up);
	buf_free(&c->from_up.in);
	c->from_up.skip = 0;
	c->down_since = mono_ms();
	/* Calls the old sandboxer got: repeat the harmless ones, fail the rest (it may have acted on them). */
	for (struct call **p = &c->calls; *p;) {
		struct call *k = *p;
		if (k->queued || k->raw) {
			k->queued = 1;
			p = &k->next;
			continue;
		}
		char msg[MAX_METHOD + 80];
		snprintf(msg, sizeof msg, "sandboxer restarted while handling %s; retry", k->method[0] ? k->method : "a request");
		answer(c, k->stream, CODE_UNAVAILABLE, msg);
		*p = k->next;
		if (c->calls_tail == &k->next)
			c->calls_tail = p;
		c->ncalls--;
		free(k);
	}
	if (log_level <= LV_WARN) {
		struct line l;
		log_begin(&l, LV_WARN);
		methods_json(&l, c, "requeued");
		log_end(&l, "task relay: sandboxer connection lost; reconnecting");
	}
	c->retry_at = c->down_since + RETRY_MS;
}

static void conn_update(struct conn *c)
{
	if (c->closed)
		return;
	uint32_t ev = 0;
	/*
	 * containerd's input waits while the sandboxer is not taking ours, and while containerd is not taking the
	 * answers (some are ours: a client that floods without reading must not grow our buffers).
	 */
	if (buf_used(&c->to_down) < OUT_HIGH && (c->up < 0 || buf_used(&c->to_up) < OUT_HIGH))
		ev |= EPOLLIN;
	if (buf_used(&c->to_down) > 0)
		ev |= EPOLLOUT;
	watch(&c->down_ep, c->down, ev);
	if (c->up >= 0) {
		ev = buf_used(&c->to_down) < OUT_HIGH ? EPOLLIN : 0;
		if (buf_used(&c->to_up) > 0)
			ev |= EPOLLOUT;
		watch(&c->up_ep, c->up, ev);
	}
}

static void on_down(struct conn *c, uint32_t events)
{
	if (events & EPOLLOUT && flush(c->down, &c->to_down) < 0) {
		conn_close(c, "write to containerd failed");
		return;
	}
	if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
		if (pump(c, c->down, &c->from_down, 1) < 0) {
			conn_close(c, errno ? "read from containerd failed" : "containerd closed it");
			return;
		}
		if (c->closed)
			return;
		if (c->up >= 0 && flush(c->up, &c->to_up) < 0)
			upstream_lost(c);
		if (flush(c->down, &c->to_down) < 0)
			conn_close(c, "write to containerd failed");
	}
}

static void on_up(struct conn *c, uint32_t events)
{
	if (c->up < 0)
		return;
	if (events & EPOLLOUT && flush(c->up, &c->to_up) < 0) {
		upstream_lost(c);
		return;
	}
	if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
		if (pump(c, c->up, &c->from_up, 0) < 0) {
			if (!c->closed) {
				(void)flush(c->down, &c->to_down);
				upstream_lost(c);
			}
			return;
		}
		if (!c->closed && flush(c->down, &c->to_down) < 0)
			conn_close(c, "write to containerd failed");
	}
}

/* containerd's rule for shim sockets (and the sandboxer's task socket): only our own uid and gid may call. */
static int peer_allowed(int fd)
{
	struct ucred cred;
	socklen_t len = sizeof cred;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return 0;
	return cred.uid == geteuid() && cred.gid == getegid();
}

static void on_accept(void)
{
	for (;;) {
		int fd = accept4(R.listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
				/* Level-triggered: without a pause the loop would spin until an fd frees up. */
				log_msg(LV_WARN, "task relay: cannot accept now; pausing 100 ms", "err", strerror(errno));
				R.accept_paused_until = mono_ms() + RETRY_MS;
				watch(&R.listen_ep, R.listen_fd, 0);
			}
			return;
		}
		if (!peer_allowed(fd)) {
			log_msg(LV_WARN, "task relay: peer credentials do not match, closing connection", NULL, NULL);
			close(fd);
			continue;
		}
		struct conn *c = calloc(1, sizeof *c);
		if (!c) {
			close(fd);
			continue;
		}
		c->down = fd;
		c->up = -1;
		c->down_since = -1;
		c->calls_tail = &c->calls;
		c->down_ep = (struct endpoint){ EP_DOWN, c, EPOLLIN };
		c->up_ep = (struct endpoint){ EP_UP, c, 0 };
		struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &c->down_ep };
		if (epoll_ctl(R.epoll, EPOLL_CTL_ADD, fd, &ev) < 0) {
			close(fd);
			free(c);
			continue;
		}
		c->next = R.conns;
		R.conns = c;
		R.nconns++;
		try_connect(c);
		conn_update(c);
	}
}

/* ---------------------------------------------------------------- setup */

/* A socket some live process answers on is not ours to take; a stale one from a dead relay is removed. */
static int prepare_listen_path(const char *path)
{
	struct stat st;
	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -1;
	if (!S_ISSOCK(st.st_mode)) {
		log_msg(LV_FATAL, "task relay: listen path exists and is not a socket; refusing to replace it", "listen", path);
		return -1;
	}
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	memcpy(sa.sun_path, path, strlen(path) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -1;
	int live = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0 || errno == EAGAIN;
	close(fd);
	if (live) {
		log_msg(LV_FATAL, "task relay: another process is serving on the listen socket", "listen", path);
		errno = EADDRINUSE;
		return -1;
	}
	return unlink(path) < 0 && errno != ENOENT ? -1 : 0;
}

static int open_listener(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	memcpy(sa.sun_path, path, strlen(path) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -1;
	/* Never reachable by others, not even between bind and chmod. */
	mode_t old = umask(077);
	int rc = bind(fd, (struct sockaddr *)&sa, sizeof sa);
	umask(old);
	struct stat st;
	if (rc < 0 || chmod(path, 0600) < 0 || stat(path, &st) < 0) {
		int saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	R.listen_ino = st.st_ino;
	R.listen_dev = st.st_dev;
	return fd;
}

/* Is the socket file still the one we bound? Gone or replaced means the state dir was removed or reused. */
static int listen_path_ours(void)
{
	struct stat st;
	return lstat(R.listen, &st) == 0 && st.st_ino == R.listen_ino && st.st_dev == R.listen_dev;
}

static int write_pid_file(const char *path)
{
	char tmp[4200], text[24];
	if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid()) >= sizeof tmp) {
		errno = ENAMETOOLONG;
		return -1;
	}
	int n = snprintf(text, sizeof text, "%d\n", (int)getpid());
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -1;
	if (write(fd, text, (size_t)n) != n || close(fd) < 0 || rename(tmp, path) < 0) {
		int saved = errno;
		unlink(tmp);
		errno = saved;
		return -1;
	}
	return 0;
}

/* Leaves the pid file alone unless it still names this process (a newer relay may own it). */
static void remove_pid_file(void)
{
	char text[32] = { 0 };
	int fd = open(R.pid_file, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	ssize_t n = read(fd, text, sizeof text - 1);
	close(fd);
	if (n > 0 && atoi(text) == (int)getpid())
		unlink(R.pid_file);
}

static void relay_usage(int fd, const char *program)
{
	dprintf(fd, "usage: %s relay --listen <socket> --upstream <task socket> [--pid-file <path>] [--reconnect-ms <ms>]\n"
		    "       [--log-level trace|debug|info|warn|error|fatal|silent]\n"
		    "Serves <socket> for containerd and relays each connection to <task socket>, keeping it open while the\n"
		    "sandboxer restarts. Exits on SIGTERM/SIGINT or when <socket> is removed.\n", program);
}

static int parse_level(const char *s)
{
	static const struct { const char *name; int lv; } levels[] = {
		{ "trace", LV_TRACE }, { "debug", LV_DEBUG }, { "info", LV_INFO }, { "warn", LV_WARN },
		{ "error", LV_ERROR }, { "fatal", LV_FATAL }, { "silent", LV_SILENT },
	};
	for (size_t i = 0; i < sizeof levels / sizeof levels[0]; i++)
		if (strcmp(s, levels[i].name) == 0)
			return levels[i].lv;
	return -1;
}

static int socket_path_ok(const char *flag, const char *p, const char *program)
{
	if (!p || p[0] != '/') {
		dprintf(2, "%s relay: %s needs an absolute path\n", program, flag);
		return 0;
	}
	if (strlen(p) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
		dprintf(2, "%s relay: %s %s does not fit in a unix socket address (max 107 bytes)\n", program, flag, p);
		return 0;
	}
	return 1;
}

static void free_closed(void)
{
	for (struct conn **p = &R.conns; *p;) {
		struct conn *c = *p;
		if (c->closed) {
			*p = c->next;
			free(c);
		} else {
			p = &c->next;
		}
	}
}

int relay_main(int argc, char **argv, const char *program, const char *kind)
{
	log_kind = kind;
	R.reconnect_ms = DEFAULT_RECONNECT_MS;
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		if (strncmp(a, "--", 2) == 0)
			a += 2;
		else if (a[0] == '-')
			a += 1;
		else {
			dprintf(2, "%s relay: unexpected argument \"%s\"\n", program, argv[i]);
			relay_usage(2, program);
			return 2;
		}
		if (strcmp(a, "h") == 0 || strcmp(a, "help") == 0) {
			relay_usage(1, program);
			return 0;
		}
		const char *eq = strchr(a, '=');
		size_t name_len = eq ? (size_t)(eq - a) : strlen(a);
		const char *value = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
		if (!value) {
			dprintf(2, "%s relay: flag needs an argument: --%s\n", program, a);
			return 2;
		}
#define FLAG(name) (name_len == strlen(name) && strncmp(a, name, name_len) == 0)
		if (FLAG("listen"))
			R.listen = value;
		else if (FLAG("upstream"))
			R.upstream = value;
		else if (FLAG("pid-file"))
			R.pid_file = value;
		else if (FLAG("reconnect-ms")) {
			char *end;
			errno = 0;
			long long ms = strtoll(value, &end, 10);
			if (errno || *end || end == value || ms < 0 || ms > 86400000LL) {
				dprintf(2, "%s relay: --reconnect-ms wants milliseconds (0..86400000), got \"%s\"\n", program, value);
				return 2;
			}
			R.reconnect_ms = ms;
		} else if (FLAG("log-level")) {
			if ((log_level = parse_level(value)) < 0) {
				dprintf(2, "%s relay: unknown --log-level \"%s\"\n", program, value);
				return 2;
			}
		} else {
			dprintf(2, "%s relay: flag provided but not defined: -%.*s\n", program, (int)name_len, a);
			relay_usage(2, program);
			return 2;
		}
#undef FLAG
	}
	if (!socket_path_ok("--listen", R.listen, program) || !socket_path_ok("--upstream", R.upstream, program))
		return 2;
	if (R.pid_file && R.pid_file[0] != '/') {
		dprintf(2, "%s relay: --pid-file needs an absolute path\n", program);
		return 2;
	}

	/*
	 * It outlives whoever started it: an fd inherited without CLOEXEC (a pipe of the sandboxer's parent, a journal
	 * stream) must not stay open for the life of the node. Only stdio is kept.
	 */
	if (close_range(3, ~0u, 0) < 0)
		for (int fd = 3; fd < 1024; fd++)
			close(fd);
	signal(SIGPIPE, SIG_IGN);
	/* Detached from whoever started it (the sandboxer it must outlive): no terminal, no cwd mount held busy. */
	signal(SIGHUP, SIG_IGN);
	if (chdir("/") < 0)
		return 1;
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigprocmask(SIG_BLOCK, &mask, NULL);

	R.epoll = epoll_create1(EPOLL_CLOEXEC);
	R.signal_fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (R.epoll < 0 || R.signal_fd < 0) {
		log_msg(LV_FATAL, "task relay: cannot set up epoll", "err", strerror(errno));
		return 1;
	}
	if (prepare_listen_path(R.listen) < 0) {
		if (errno != EADDRINUSE)
			log_msg(LV_FATAL, "task relay: cannot use the listen path", "err", strerror(errno));
		return 1;
	}
	R.listen_fd = open_listener(R.listen);
	if (R.listen_fd < 0) {
		log_msg(LV_FATAL, "task relay: cannot bind the listen socket", "err", strerror(errno));
		return 1;
	}
	R.listen_ep = (struct endpoint){ EP_LISTEN, NULL, EPOLLIN };
	R.signal_ep = (struct endpoint){ EP_SIGNAL, NULL, EPOLLIN };
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &R.listen_ep };
	struct epoll_event sev = { .events = EPOLLIN, .data.ptr = &R.signal_ep };
	if (epoll_ctl(R.epoll, EPOLL_CTL_ADD, R.listen_fd, &ev) < 0 || epoll_ctl(R.epoll, EPOLL_CTL_ADD, R.signal_fd, &sev) < 0) {
		log_msg(LV_FATAL, "task relay: cannot set up epoll", "err", strerror(errno));
		return 1;
	}
	/* The pid file comes before listen(): whoever sees the socket answer can read it. */
	if ((R.pid_file && write_pid_file(R.pid_file) < 0) || listen(R.listen_fd, SOMAXCONN) < 0) {
		log_msg(LV_FATAL, "task relay: cannot write the pid file or listen", "err", strerror(errno));
		unlink(R.listen);
		return 1;
	}
	log_msg(LV_INFO, "task relay listening", "listen", R.listen);

	const char *why = NULL;
	R.watch_at = mono_ms() + WATCH_MS;
	while (!why) {
		int64_t now = mono_ms(), next = R.watch_at;
		if (R.accept_paused_until && R.accept_paused_until < next)
			next = R.accept_paused_until;
		for (struct conn *c = R.conns; c; c = c->next) {
			if (!c->closed && c->up < 0 && c->retry_at < next)
				next = c->retry_at;
			if (!c->closed && c->probe && c->probe_reap_at < next)
				next = c->probe_reap_at;
		}
		int timeout = next <= now ? 0 : (int)(next - now);
		struct epoll_event events[64];
		int n = epoll_wait(R.epoll, events, 64, timeout);
		if (n < 0 && errno != EINTR) {
			log_msg(LV_FATAL, "task relay: epoll_wait failed", "err", strerror(errno));
			why = "epoll failed";
			break;
		}
		for (int i = 0; i < n; i++) {
			struct endpoint *ep = events[i].data.ptr;
			switch (ep->type) {
			case EP_LISTEN:
				on_accept();
				break;
			case EP_SIGNAL: {
				struct signalfd_siginfo si;
				if (read(R.signal_fd, &si, sizeof si) == (ssize_t)sizeof si)
					why = si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT";
				break;
			}
			case EP_DOWN:
				if (!ep->conn->closed)
					on_down(ep->conn, events[i].events);
				break;
			case EP_UP:
				if (!ep->conn->closed)
					on_up(ep->conn, events[i].events);
				break;
			}
		}
		now = mono_ms();
		if (R.accept_paused_until && now >= R.accept_paused_until) {
			R.accept_paused_until = 0;
			watch(&R.listen_ep, R.listen_fd, EPOLLIN);
		}
		for (struct conn *c = R.conns; c; c = c->next) {
			if (!c->closed && c->probe && now >= c->probe_reap_at) {
				log_msg(LV_INFO, "task relay: closing a connection containerd abandoned (its Connect probe failed or timed out)",
					NULL, NULL);
				conn_close(c, NULL);
			}
			if (!c->closed && c->up < 0 && now >= c->retry_at)
				try_connect(c);
			conn_update(c);
		}
		free_closed();
		if (now >= R.watch_at) {
			R.watch_at = now + WATCH_MS;
			if (!listen_path_ours())
				why = "socket removed";
		}
	}

	log_msg(LV_INFO, "task relay stopping", "why", why);
	if (listen_path_ours())
		unlink(R.listen);
	if (R.pid_file)
		remove_pid_file();
	for (struct conn *c = R.conns; c; c = c->next)
		conn_close(c, NULL);
	free_closed();
	close(R.listen_fd);
	close(R.signal_fd);
	close(R.epoll);
	return 0;
}
