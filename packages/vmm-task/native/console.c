/*
 * kuasar-console: the terminal of one guest process, for the vmm-task agent.
 *
 * QuickJS has no ioctl and no SCM_RIGHTS, so the agent cannot hold a pty itself. This helper does,
 * and relays between the pty master and its own stdin/stdout, which are the pipes the agent already
 * streams to the host. It is built static (musl) so it runs in any guest image.
 *
 *   kuasar-console socket CONTROL SOCKET   listen on SOCKET for crun's --console-socket and take the
 *                                          pty master crun sends (SCM_RIGHTS)
 *   kuasar-console exec CONTROL ARGV...    open a pty itself and run ARGV on it (debug shells)
 *
 * CONTROL is a FIFO this helper creates; each line "ROWS COLS" written to it resizes the terminal
 * (TIOCSWINSZ), also before the master arrived. Once the FIFO and socket exist, the helper writes
 * "ready\n" to stderr (a pipe the agent reads); later errors go there too.
 * It exits when the pty has no slave left (every process on the terminal is gone) and its output is
 * written, or when stdout's reader goes away. Exit status: exec mode the child's (128+signal if
 * killed), socket mode 0; 1 for a setup error, 2 for bad usage.
 * Closing stdin only stops the input relay: a pty cannot be half-closed (runc's shim behaves so too).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

static const char *control_path, *socket_path;

static void cleanup(void) {
  if (control_path) unlink(control_path);
  if (socket_path) unlink(socket_path);
}

static void fail(const char *what) {
  dprintf(2, "kuasar-console: %s: %s\n", what, strerror(errno));
  cleanup();
  exit(1);
}

/* One direction of the relay; a full buffer stops reading until the writer took it. */
struct pump {
  int from, to;
  char buf[16384];
  size_t off, len;
  int eof;
};

static int winsize_pending, master = -1;
static struct winsize winsize;

static void apply_winsize(void) {
  if (master >= 0 && winsize_pending && ioctl(master, TIOCSWINSZ, &winsize) == 0) winsize_pending = 0;
}

/* Lines "ROWS COLS"; a malformed line is skipped, the last size wins. */
static void read_control(int fd) {
  static char line[64];
  static size_t n;
  char buf[256];
  ssize_t r = read(fd, buf, sizeof buf);
  for (ssize_t i = 0; i < r; i++) {
    if (buf[i] != '\n') {
      if (n < sizeof line - 1) line[n++] = buf[i];
      continue;
    }
    line[n] = 0;
    n = 0;
    unsigned rows, cols;
    char extra;
    if (sscanf(line, "%u %u %c", &rows, &cols, &extra) == 2 && rows <= 65535 && cols <= 65535) {
      winsize = (struct winsize){.ws_row = rows, .ws_col = cols};
      winsize_pending = 1;
    }
  }
  apply_winsize();
}

/* The fd crun sends; any payload (crun sends the pty's name) is read and ignored. */
static int receive_master(int listener) {
  int conn = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
  if (conn < 0) return errno == EINTR || errno == EAGAIN ? -1 : (fail("accept"), -1);
  char payload[256];
  union { struct cmsghdr h; char buf[CMSG_SPACE(sizeof(int))]; } control;
  struct iovec iov = {payload, sizeof payload};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf, .msg_controllen = sizeof control.buf};
  ssize_t r;
  do r = recvmsg(conn, &msg, MSG_CMSG_CLOEXEC); while (r < 0 && errno == EINTR);
  close(conn);
  struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
  if (r < 0 || !c || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) {
    dprintf(2, "kuasar-console: a connection on the console socket sent no fd\n");
    return -1;
  }
  int fd;
  memcpy(&fd, CMSG_DATA(c), sizeof fd);
  return fd;
}

static pid_t spawn_on_pty(char **argv) {
  master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (master < 0 || grantpt(master) < 0 || unlockpt(master) < 0) fail("open a pty");
  const char *slave = ptsname(master);
  if (!slave) fail("ptsname");
  pid_t pid = fork();
  if (pid < 0) fail("fork");
  if (pid == 0) {
    int s;
    if (setsid() < 0 || (s = open(slave, O_RDWR)) < 0 || ioctl(s, TIOCSCTTY, 0) < 0) fail("attach the pty");
    dup2(s, 0), dup2(s, 1), dup2(s, 2);
    if (s > 2) close(s);
    signal(SIGPIPE, SIG_DFL);
    execvp(argv[0], argv);
    dprintf(2, "kuasar-console: exec %s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  return pid;
}

/* Moves what one poll said is ready; returns 0 once this direction is finished. */
static int pump_step(struct pump *p, short revents, int is_output) {
  if (p->len == 0 && (revents & (POLLIN | POLLHUP | POLLERR))) {
    ssize_t r = read(p->from, p->buf, sizeof p->buf);
    if (r > 0) p->off = 0, p->len = (size_t)r;
    /* EIO from a pty master: no slave is open any more. */
    else if (r == 0 || (errno != EAGAIN && errno != EINTR)) p->eof = 1;
  } else if (p->len > 0 && (revents & (POLLOUT | POLLERR | POLLHUP))) {
    ssize_t w = write(p->to, p->buf + p->off, p->len);
    if (w > 0) p->off += (size_t)w, p->len -= (size_t)w;
    else if (errno != EAGAIN && errno != EINTR) {
      if (is_output) exit(1); /* the agent closed our stdout: nobody is left to read the terminal */
      p->len = 0, p->eof = 1; /* the terminal refused input: drop it, keep the output going */
    }
  }
  return !(p->eof && p->len == 0);
}

int main(int argc, char **argv) {
  if (argc < 4 || (strcmp(argv[1], "socket") && strcmp(argv[1], "exec"))) {
    dprintf(2, "usage: kuasar-console socket CONTROL SOCKET | exec CONTROL ARGV...\n");
    return 2;
  }
  int exec_mode = !strcmp(argv[1], "exec");
  signal(SIGPIPE, SIG_IGN);

  unlink(argv[2]);
  if (mkfifo(argv[2], 0600) < 0) fail("mkfifo");
  control_path = argv[2];
  /* Read-write, so the FIFO never reports EOF between two writers. */
  int control = open(control_path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (control < 0) fail("open the control FIFO");

  int listener = -1;
  pid_t child = -1;
  if (exec_mode) {
    child = spawn_on_pty(argv + 3);
  } else {
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(argv[3]) >= sizeof addr.sun_path) { errno = ENAMETOOLONG; fail("console socket path"); }
    strcpy(addr.sun_path, argv[3]);
    unlink(argv[3]);
    listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listener < 0 || bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0) fail("bind the console socket");
    socket_path = argv[3];
    if (listen(listener, 1) < 0) fail("listen");
  }
  if (write(2, "ready\n", 6) != 6) fail("report ready");

  fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
  fcntl(1, F_SETFL, fcntl(1, F_GETFL) | O_NONBLOCK);
  static struct pump in = {.from = 0}, out = {.to = 1};
  in.to = out.from = master;
  int in_live = 1, out_live = 1;
  while (out_live) {
    if (master < 0 && listener < 0) break;
    struct pollfd fds[4] = {{.fd = control, .events = POLLIN}, {.fd = -1}, {.fd = -1}, {.fd = -1}};
    if (master < 0) {
      fds[1] = (struct pollfd){.fd = listener, .events = POLLIN};
    } else {
      fds[1] = (struct pollfd){.fd = out.len ? 1 : master, .events = out.len ? POLLOUT : POLLIN};
      if (in_live) fds[2] = (struct pollfd){.fd = in.len ? master : 0, .events = in.len ? POLLOUT : POLLIN};
    }
    if (poll(fds, 3, -1) < 0) {
      if (errno == EINTR) continue;
      fail("poll");
    }
    if (fds[0].revents) read_control(control);
    if (master < 0) {
      if (fds[1].revents) {
        master = receive_master(listener);
        if (master < 0) continue;
        close(listener);
        listener = -1;
        unlink(socket_path);
        socket_path = NULL;
        fcntl(master, F_SETFL, fcntl(master, F_GETFL) | O_NONBLOCK);
        in.to = master, out.from = master;
        apply_winsize();
      }
      continue;
    }
    if (fds[1].revents) out_live = pump_step(&out, fds[1].revents, 1);
    if (in_live && fds[2].revents) in_live = pump_step(&in, fds[2].revents, 0);
  }
  cleanup();
  if (child < 0) return 0;
  int status;
  while (waitpid(child, &status, 0) < 0)
    if (errno != EINTR) return 1;
  return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
}
