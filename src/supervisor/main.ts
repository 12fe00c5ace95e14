#!/usr/bin/env node
// Entry point of both bins (responses-api-proxy, codex-responses-api-proxy).

import './heapSettings.js'; // first: before anything else allocates
import { runCommandLine } from './startProxy.js';

runCommandLine(process.argv.slice(2));
