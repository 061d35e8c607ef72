;; Opens "fifo" in the rootfs for reading, which blocks in the host until a writer opens it, then spins.
;; A kill cannot unblock that open: the runner reports the exit after killAbandonMs, and the thread must stop as
;; soon as the open returns.
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 32) "fifo")
  (func (export "_start")
    (drop (call $path_open (i32.const 3) (i32.const 0) (i32.const 32) (i32.const 4)
      (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 12)))
    (loop $spin (br $spin))))
