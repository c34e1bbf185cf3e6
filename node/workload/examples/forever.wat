;; Never ends (to show the fuel and wall-clock limits): a loop with no exit and no host call,
;; so only wasmtime's fuel or epoch checks inside the loop can stop it.
(module
  (memory (export "memory") 1)
  (func (export "_start")
    (loop $spin
      (br $spin))))
