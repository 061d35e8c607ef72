;; Declares a 256 MiB minimum: a pod limited below that must be refused before it starts.
(module
  (memory (export "memory") 4096)
  (func (export "_start")))
