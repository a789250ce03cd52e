from visioncompare.gateway.server import main

main()
