# The README's "Quick start" app.py, verbatim (the README is its documentation):
#
#     wscore sandbox run --app examples.quickstart.app:server \
#         --workload examples.quickstart.workload:QuickstartWorkload --profile flaky-mobile
#
# tests/sandbox/test_workloads.py runs it under the sandbox, so the README's app is proven to
# resume through resets and blackholes with nothing lost.
from wscore import WsContext, WsServer, WsServerConfig

server = WsServer(config=WsServerConfig.dev(port=8080))

chat_schema = {
    'text': lambda v: isinstance(v, str) and v != '',
    'roomId': lambda v: isinstance(v, str),
}

@server.on('chat.message', schema=chat_schema)      # decorator form
def chat_message(ctx: WsContext):
    ctx.broadcast_to_room(ctx.payload['roomId'], 'chat.new_message',
                          {'text': ctx.payload['text'], 'sender': ctx.user_id or 'anon'})
    return {'status': 'sent'}                       # returned value = auto-reply

def join(ctx):
    server.rooms.join(ctx.payload['roomId'], ctx.session)
    return {'joined': ctx.payload['roomId']}
server.on('room.join', join)                        # call form

if __name__ == '__main__':
    server.serve_forever()                          # until Ctrl-C / SIGTERM
