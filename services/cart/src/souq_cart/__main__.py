from souq_cart.main import main

main()
