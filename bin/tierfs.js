#!/usr/bin/env node
'use strict';
// The tierfs command; the code is compiled to dist/ by `make build`.
const { main } = require('../dist/src/cli/main.js');
main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error) => {
    process.stderr.write(`tierfs: ${error && error.message}\n`);
    process.exit(1);
  },
);
