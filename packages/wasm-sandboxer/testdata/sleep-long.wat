;; Sleeps 60 s in poll_oneoff (one relative CLOCK_MONOTONIC subscription), then prints "woke" and returns.
(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 512) "woke\n")
  ;; subscription at 0 (48 bytes): userdata 7, tag 0 = clock, clock id 1 = monotonic, timeout (ns), precision 0,
  ;; flags 0 = relative. The event lands at 64, nevents at 128.
  (func (export "_start")
    (i64.store (i32.const 0) (i64.const 7))
    (i32.store8 (i32.const 8) (i32.const 0))
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const 60000000000))
    (i64.store (i32.const 32) (i64.const 0))
    (i32.store16 (i32.const 40) (i32.const 0))
    (if (call $poll_oneoff (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128))
      (then (call $proc_exit (i32.const 1))))
    ;; exactly one event, for our subscription, without error
    (if (i32.ne (i32.load (i32.const 128)) (i32.const 1)) (then (call $proc_exit (i32.const 2))))
    (if (i64.ne (i64.load (i32.const 64)) (i64.const 7)) (then (call $proc_exit (i32.const 3))))
    (if (i32.load16_u (i32.const 72)) (then (call $proc_exit (i32.const 4))))
    (i32.store (i32.const 256) (i32.const 512))
    (i32.store (i32.const 260) (i32.const 5))
    (drop (call $fd_write (i32.const 1) (i32.const 256) (i32.const 1) (i32.const 264)))))
