;; Draws random bytes (to show a capability refused unless the job grants `random`): imports
;; WASI random_get and fills 16 bytes of memory.
(module
  (import "wasi_snapshot_preview1" "random_get"
    (func $random_get (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (if (call $random_get (i32.const 0) (i32.const 16))
      (then unreachable))))
