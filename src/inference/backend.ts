import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { ConfigError } from '../config/env.js';

export type BackendPreference = 'auto' | 'node' | 'wasm' | 'cpu';

/**
 * Selects the TensorFlow.js backend. `auto` prefers native tfjs-node when its optional package
 * loads (it needs libtensorflow, which not every machine can install), then WASM, then pure JS.
 */
export async function initBackend(pref: BackendPreference = 'auto'): Promise<string> {
  if (pref === 'node' || pref === 'auto') {
    try {
      // Optional dependency: resolved at run time so the service works without it.
      const name = '@tensorflow/tfjs-node';
      await import(name);
      if (await tf.setBackend('tensorflow')) return finish();
    } catch (err) {
      if (pref === 'node') throw new ConfigError(`invalid configuration:\n  TF_BACKEND: node, but @tensorflow/tfjs-node did not load: ${(err as Error).message}`);
    }
  }
  if (pref === 'wasm' || pref === 'auto') {
    if (await tf.setBackend('wasm')) return finish();
    if (pref === 'wasm') throw new Error('TF_BACKEND=wasm but the WASM backend failed to initialise');
  }
  if (!(await tf.setBackend('cpu'))) throw new Error('no TensorFlow.js backend could be initialised');
  return finish();

  async function finish() {
    await tf.ready();
    return tf.getBackend();
  }
}

export { tf };
