;; Counts the bytes of its input: writes the count as an 8-byte little-endian integer. The
;; mapper of the reducer example (u64sum.wat is its reducer).
(module
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  ;; 0..8: iovec, 8: nread, 16..24: the count, 64..: a 64 KiB read buffer
  (func (export "_start")
    (local $n i32) (local $total i64)
    (block $eof
      (loop $read
        (i32.store (i32.const 0) (i32.const 64))
        (i32.store (i32.const 4) (i32.const 65536))
        (br_if $eof (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
        (local.set $n (i32.load (i32.const 8)))
        (br_if $eof (i32.eqz (local.get $n)))
        (local.set $total (i64.add (local.get $total) (i64.extend_i32_u (local.get $n))))
        (br $read)))
    (i64.store (i32.const 16) (local.get $total))
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 8))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
