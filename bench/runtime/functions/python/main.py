# Hello-world function for the runtime benchmark (bench/runtime/run.sh),
# async form.
async def main(context):
    return context.res.text("Hello, World!")
