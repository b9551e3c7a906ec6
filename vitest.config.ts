import { defineConfig } from 'vitest/config';

// Two projects: unit tests beside the code (pure logic, parallel) and integration
// tests under test/ (root, network namespaces, the real daemon; one file at a time
// because they share the machine's 2 cores and the kernel's netns machinery).
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['packages/*/src/**/*.test.ts'],
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/**/*.test.ts'],
          fileParallelism: false,
          testTimeout: 60_000,
          hookTimeout: 60_000,
        },
      },
    ],
  },
});
