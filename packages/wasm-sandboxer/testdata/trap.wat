;; Traps on its first instruction.
(module
  (memory (export "memory") 1)
  (func $crash unreachable)
  (func (export "_start") (call $crash)))
