// Starts fauxqs with its request log off. fauxqs's own cli.js passes
// logger: true, which overrides FAUXQS_LOGGER; logging every request costs
// the emulator about as much CPU as serving it.
//
//   node scripts/fauxqs.mjs <path to fauxqs/dist/app.js>
// Port and host come from FAUXQS_PORT and FAUXQS_HOST, as with the CLI.
import { pathToFileURL } from "node:url";

const { startFauxqs } = await import(pathToFileURL(process.argv[2]).href);
await startFauxqs({ logger: process.env.FAUXQS_LOGGER === "true" });
for (const sig of ["SIGINT", "SIGTERM"]) {
	process.on(sig, () => process.exit(0));
}
