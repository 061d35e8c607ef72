;; Prints every argv entry, then every environ entry, one per line (each NUL terminator becomes "\n").
(module
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $environ_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  ;; layout: 0..16 scratch (counts, iovec, nwritten); 1024.. pointer array; 65536.. string buffer

  ;; replace the NULs of buf[0..len) with newlines and write it to stdout
  (func $print_lines (param $buf i32) (param $len i32)
    (local $i i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (if (i32.eqz (i32.load8_u (i32.add (local.get $buf) (local.get $i))))
          (then (i32.store8 (i32.add (local.get $buf) (local.get $i)) (i32.const 10))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.store (i32.const 4) (local.get $buf))
    (i32.store (i32.const 8) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 4) (i32.const 1) (i32.const 12))))

  (func (export "_start")
    (drop (call $args_sizes_get (i32.const 0) (i32.const 16)))
    (drop (call $args_get (i32.const 1024) (i32.const 65536)))
    (call $print_lines (i32.const 65536) (i32.load (i32.const 16)))
    (drop (call $environ_sizes_get (i32.const 0) (i32.const 16)))
    (drop (call $environ_get (i32.const 1024) (i32.const 65536)))
    (call $print_lines (i32.const 65536) (i32.load (i32.const 16)))))
