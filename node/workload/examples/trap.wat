;; Traps at once (to show how a trap is reported): `unreachable` in _start.
(module
  (memory (export "memory") 1)
  (func (export "_start")
    unreachable))
