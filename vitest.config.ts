import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // tfjs + WASM and real redis-server processes: keep files in separate forks, few at a time
    pool: 'forks',
    maxWorkers: 2,
  },
});
