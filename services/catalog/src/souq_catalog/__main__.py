from souq_catalog.main import main

main()
