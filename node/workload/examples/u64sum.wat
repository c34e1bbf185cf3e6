;; A reducer (aggregation kind "wasm"): its input is the fragments' outputs framed as records of
;; a 4-byte little-endian length and the bytes; each record here is one 8-byte little-endian
;; integer (bytecount.wat's output). Writes their sum the same way, so it is associative: it can
;; combine partial sums as well as outputs. A record of another length traps.
(module
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  ;; 0..8: iovec, 8: nread, 16..24: the sum, 32..44: the record being read (length + value)
  (func $read_exact (param $at i32) (param $len i32) (result i32)
    ;; 1 when $len bytes were read to $at, 0 at a clean end of input; traps on a short record
    (local $got i32) (local $n i32)
    (block $done
      (loop $more
        (br_if $done (i32.ge_u (local.get $got) (local.get $len)))
        (i32.store (i32.const 0) (i32.add (local.get $at) (local.get $got)))
        (i32.store (i32.const 4) (i32.sub (local.get $len) (local.get $got)))
        (if (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8))
          (then unreachable))
        (local.set $n (i32.load (i32.const 8)))
        (if (i32.eqz (local.get $n))
          (then
            (if (i32.eqz (local.get $got)) (then (return (i32.const 0))))
            unreachable))
        (local.set $got (i32.add (local.get $got) (local.get $n)))
        (br $more)))
    (i32.const 1))
  (func (export "_start")
    (local $sum i64)
    (block $eof
      (loop $record
        (br_if $eof (i32.eqz (call $read_exact (i32.const 32) (i32.const 4))))
        (if (i32.ne (i32.load (i32.const 32)) (i32.const 8)) (then unreachable))
        (if (i32.eqz (call $read_exact (i32.const 36) (i32.const 8))) (then unreachable))
        (local.set $sum (i64.add (local.get $sum) (i64.load (i32.const 36))))
        (br $record)))
    (i64.store (i32.const 16) (local.get $sum))
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 8))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
