// Build the browser client: one minified ES module (esbuild) + type declarations (tsc).
//   node build.mjs            -> dist/wscore.js, dist/types/*.d.ts
//   node build.mjs --out F    -> also write the module to F (the copy the Python package ships)
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, rmSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const pkg = JSON.parse(await (await import("node:fs/promises")).readFile(resolve(here, "package.json"), "utf8"));
rmSync(resolve(here, "dist"), { recursive: true, force: true });
await build({
  entryPoints: [resolve(here, "src/index.ts")],
  outfile: resolve(here, "dist/wscore.js"),
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  // Private members are spelled _name; mangling them is safe (quoted keys, e.g. the
  // persisted state, are never mangled) and saves about a tenth of the size.
  mangleProps: /^_/,
  legalComments: "none",
  banner: { js: `/* wscore browser client ${pkg.version} (MIT) — source: clients/js */` },
  logLevel: "warning",
});
execFileSync(resolve(here, "node_modules/.bin/tsc"), ["-p", here, "--emitDeclarationOnly", "--outDir", resolve(here, "dist/types")], { stdio: "inherit" });
const i = process.argv.indexOf("--out");
if (i > 0) {
  const out = resolve(process.argv[i + 1]);
  mkdirSync(dirname(out), { recursive: true });
  copyFileSync(resolve(here, "dist/wscore.js"), out);
}
