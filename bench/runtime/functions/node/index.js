// Hello-world function for the runtime benchmark (bench/runtime/run.sh).
module.exports = async (context) => context.res.text('Hello, World!');
