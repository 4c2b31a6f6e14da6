from souq_gateway.main import main

main()
