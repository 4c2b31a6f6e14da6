from souq_identity.main import main

main()
