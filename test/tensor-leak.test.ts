import { describeTensorLeak } from './helpers/tensor-leak.js';

// The default backend: requests run as direct WASM kernel calls, larger calls through tensors.
describeTensorLeak('wasm', 'wasm-direct', 100_000);
