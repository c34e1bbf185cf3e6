;; Reads the wall clock (to show a capability refused unless the job grants `clock`): imports
;; WASI clock_time_get, writes nothing, exits 0 when the call succeeded.
(module
  (import "wasi_snapshot_preview1" "clock_time_get"
    (func $clock_time_get (param i32 i64 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (if (call $clock_time_get (i32.const 0) (i64.const 1) (i32.const 0))
      (then unreachable))))
