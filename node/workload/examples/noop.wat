;; Reads its input to the end and exits with no output: the smallest fragment there is, to
;; measure what the task flow costs around the engine's run (`python -m bench tasks`).
(module
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  ;; 0..8: iovec, 8: nread, 16..4112: the buffer each read overwrites
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 4096))
    (block $eof
      (loop $read
        (br_if $eof (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
        (br_if $eof (i32.eqz (i32.load (i32.const 8))))
        (br $read)))))
