;; Reads "in.txt" from the rootfs (preopen fd 3, guest "/"), writes the bytes to "out.txt" in the rootfs and to
;; "out.txt" in the second preopen (fd 4, a bind mount), and prints them on stdout. Any failing call exits with
;; 10 + the step number so a test can tell which step broke.
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $fd_close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 32) "in.txt")
  (data (i32.const 48) "out.txt")
  ;; 0: iovec {buf,len}; 8: nread/nwritten; 12: opened fd; 16: length read; 1024..: file contents

  (func $check (param $errno i32) (param $step i32)
    (if (local.get $errno) (then (call $proc_exit (i32.add (i32.const 10) (local.get $step))))))

  ;; create/truncate "out.txt" under the preopen $dir and write the contents to it
  (func $write_out (param $dir i32) (param $step i32)
    ;; oflags O_CREAT|O_TRUNC = 9, rights fd_write (1<<6)
    (call $check (call $path_open (local.get $dir) (i32.const 0) (i32.const 48) (i32.const 7)
      (i32.const 9) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 12)) (local.get $step))
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (i32.load (i32.const 16)))
    (call $check (call $fd_write (i32.load (i32.const 12)) (i32.const 0) (i32.const 1) (i32.const 8))
      (i32.add (local.get $step) (i32.const 1)))
    (call $check (call $fd_close (i32.load (i32.const 12))) (i32.add (local.get $step) (i32.const 2))))

  (func (export "_start")
    ;; rights fd_read (1<<1)
    (call $check (call $path_open (i32.const 3) (i32.const 0) (i32.const 32) (i32.const 6)
      (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 12)) (i32.const 1))
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (i32.const 4096))
    (call $check (call $fd_read (i32.load (i32.const 12)) (i32.const 0) (i32.const 1) (i32.const 8)) (i32.const 2))
    (i32.store (i32.const 16) (i32.load (i32.const 8)))
    (call $check (call $fd_close (i32.load (i32.const 12))) (i32.const 3))
    (call $write_out (i32.const 3) (i32.const 4))
    (call $write_out (i32.const 4) (i32.const 7))
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (i32.load (i32.const 16)))
    (call $check (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)) (i32.const 10))))
