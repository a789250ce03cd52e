"""`vcompare`: the offline tools around the gateway, apart from the server it talks to.

The command line (`cli`: models, compare, evaluate, stack), the dataset evaluation (`evaluate`,
`evaluate_cli`) and its HTML report (`report`), and the local stack (`stack`, reading
docker-compose.yml through `compose`). They reach the models through the gateway (gRPC) or start
them as processes; the gateway server (`gateway`) imports none of this (`lint-imports`).
"""
