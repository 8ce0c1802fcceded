// The parts of fuse-native 2.2.6 that src/fuse uses (the package ships no types).
declare module 'fuse-native' {
  type Callback = (result: number, ...values: unknown[]) => void;
  class Fuse {
    constructor(mountPoint: string, ops: Record<string, (...args: any[]) => void>, options?: Record<string, unknown>);
    mount(cb: (error: Error | null) => void): void;
    unmount(cb: (error: Error | null) => void): void;
    static unmount(mountPoint: string, cb: (error: Error | null) => void): void;
  }
  export = Fuse;
  export type { Callback };
}
