;; Burns 65536 loop iterations per input byte (about 60 us per byte on the development host),
;; then writes its input back unchanged (at most 1 MiB): a fragment whose run time a test
;; chooses by its size, and whose outputs (`concat`) rebuild the job's input. The task tests
;; kill agents and managers while it runs.
(module
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 18)
  ;; 0..8: iovec, 8: nread/nwritten, 65536..: the input (up to 1 MiB)
  (func (export "_start")
    (local $total i32) (local $n i32) (local $spin i64) (local $at i32)
    (block $eof
      (loop $read
        (br_if $eof (i32.ge_u (local.get $total) (i32.const 1048576)))
        (i32.store (i32.const 0) (i32.add (i32.const 65536) (local.get $total)))
        (i32.store (i32.const 4) (i32.sub (i32.const 1048576) (local.get $total)))
        (br_if $eof (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
        (local.set $n (i32.load (i32.const 8)))
        (br_if $eof (i32.eqz (local.get $n)))
        (local.set $total (i32.add (local.get $total) (local.get $n)))
        (br $read)))
    (local.set $spin (i64.mul (i64.extend_i32_u (local.get $total)) (i64.const 65536)))
    (block $spun
      (loop $burn
        (br_if $spun (i64.eqz (local.get $spin)))
        (local.set $spin (i64.sub (local.get $spin) (i64.const 1)))
        (br $burn)))
    (block $written
      (loop $write
        (br_if $written (i32.ge_u (local.get $at) (local.get $total)))
        (i32.store (i32.const 0) (i32.add (i32.const 65536) (local.get $at)))
        (i32.store (i32.const 4) (i32.sub (local.get $total) (local.get $at)))
        (br_if $written (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
        (local.set $at (i32.add (local.get $at) (i32.load (i32.const 8))))
        (br $write)))))
