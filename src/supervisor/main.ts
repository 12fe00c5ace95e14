#!/usr/bin/env node
// Entry point of both bins (responses-api-proxy, codex-responses-api-proxy).

import './startup/heapSettings.js'; // first: before anything else allocates
import { runCommandLine } from './startup/startProxy.js';

runCommandLine(process.argv.slice(2));
