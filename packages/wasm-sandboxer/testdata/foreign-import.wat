;; Imports a function WASI does not provide: the runner must refuse it with a clear error, not a link crash.
(module
  (import "env" "host_magic" (func $host_magic (result i32)))
  (memory (export "memory") 1)
  (func (export "_start") (drop (call $host_magic))))
