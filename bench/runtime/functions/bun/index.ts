// Hello-world function for the runtime benchmark (bench/runtime/run.sh), Bun.
export default async (context: any) => context.res.text('Hello, World!');
