import { describeTensorLeak } from './helpers/tensor-leak.js';

// The pure-JS backend runs every model call through tfjs tensors (the fused-chain path), as
// tfjs-node does, so this is where a missing dispose() on the request path would show.
describeTensorLeak('cpu', 'fused-chain', 100_000);
