;; Grows linear memory 16 pages (1 MiB) at a time and touches every new page, until memory.grow fails;
;; then it says so on stderr and traps, as an allocator does when it runs out of memory.
;; The declared maximum is the wasm32 ceiling, so only the runner's limit can stop it.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1 65536)
  (data (i32.const 64) "memory.grow failed\n")
  (func (export "_start")
    (local $old i32)
    (local $page i32)
    (loop $grow
      (local.set $old (memory.grow (i32.const 16)))
      (if (i32.ne (local.get $old) (i32.const -1))
        (then
          (local.set $page (local.get $old))
          (loop $touch
            (i32.store8 (i32.mul (local.get $page) (i32.const 65536)) (i32.const 1))
            (local.set $page (i32.add (local.get $page) (i32.const 1)))
            (br_if $touch (i32.lt_u (local.get $page) (i32.add (local.get $old) (i32.const 16)))))
          (br $grow))))
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 19))
    (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
    unreachable))
